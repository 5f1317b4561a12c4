"""Before a DP run: will it learn? The noise it must add, and the signal left over.

DP-SGD adds Gaussian noise of standard deviation ``sigma x C`` to the sum of a logical batch's
clipped gradients (each at most ``C``). Averaged over ``B`` rows, the noise per step is
``sigma / B`` of the clip norm, and over ``T`` steps it shrinks like ``1 / sqrt(T)`` while the
signal adds up: the run's *signal* is ``B x sqrt(T) / sigma``. The noise multiplier ``sigma``
follows from (epsilon, delta, sample rate ``B / n``, epochs) through the same RDP accountant
the run will use. Below :data:`MIN_SIGNAL` a run is expected to leave the model where it
started, and is warned about (or, strictly, refused) before it spends any epsilon.

How the threshold was set (BENCHMARKS.md, issue #19): on Banking77, 1,500 private rows at
example-level epsilon 8 (signal ~1,800) moved test accuracy by at most a few points under DP;
a tiny set (100 rows at epsilon 1: signal ~34) is two orders of magnitude lower. 300 sits
between them; it is a floor, not a promise that a run above it learns much.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.privacy.dp import default_delta

log = logging.getLogger(__name__)

#: A run below this signal is not expected to learn (see the module docstring).
MIN_SIGNAL = 300.0


class DPWontLearnError(TutorloopError):
    """A strict run refused: DP noise would drown what these rows can teach."""


@dataclass(frozen=True)
class DPPlan:
    """What a DP-SGD run over ``rows`` private rows will do, computed before it starts."""

    rows: int
    epsilon: float
    delta: float
    batch_size: int  # expected logical batch
    sample_rate: float
    epochs: int
    steps: int
    noise_multiplier: float
    max_grad_norm: float

    @property
    def signal(self) -> float:
        return self.batch_size * math.sqrt(max(1, self.steps)) / self.noise_multiplier

    @property
    def can_learn(self) -> bool:
        return self.signal >= MIN_SIGNAL

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "signal": round(self.signal, 1), "min_signal": MIN_SIGNAL}

    def advice(self) -> str:
        """One paragraph: the numbers, and what to change."""
        return (
            f"DP-SGD over {self.rows} private rows at epsilon {self.epsilon:g} "
            f"(delta {self.delta:.1e}) needs noise multiplier {self.noise_multiplier:.2f} with "
            f"expected batches of {self.batch_size} for {self.steps} steps: signal "
            f"{self.signal:.0f}, below {MIN_SIGNAL:.0f} (privacy.dp_plan; bench/dp.py measured "
            "DP runs far above it learning little). The model will barely move while the "
            "epsilon is spent. Capture "
            "more rows before the next retrain, raise privacy.dp_epsilon, or lower "
            "privacy.dp_epochs."
        )


def logical_batch(privacy: PrivacySettings, rows: int) -> int:
    """The expected batch size of DP-SGD: ``privacy.dp_batch_size``, at most every row."""
    return max(1, min(privacy.dp_batch_size, rows))


def private_rows(dataset_counts: dict[str, Any]) -> int:
    """The private (non-evaluation) rows of a dataset version, from its counts. A dataset
    built before rows were marked counts all of them: the conservative reading."""
    private = dataset_counts.get("private_train")
    if private is None:
        by_split = dataset_counts.get("by_split", {})
        private = sum(n for split, n in by_split.items() if split != "eval")
    return int(private)


def plan(rows: int, privacy: PrivacySettings) -> DPPlan:
    """The plan of a DP run over ``rows`` private rows with ``privacy``'s DP settings."""
    if privacy.dp_epsilon is None:
        raise ValueError("privacy.dp_epsilon is not set: this is not a DP run")
    from opacus.accountants.utils import get_noise_multiplier

    batch = logical_batch(privacy, rows)
    sample_rate = batch / max(1, rows)
    delta = privacy.dp_delta or default_delta(rows)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore")
        sigma = get_noise_multiplier(
            target_epsilon=privacy.dp_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=privacy.dp_epochs,
            accountant="rdp",
        )
    return DPPlan(
        rows=rows,
        epsilon=privacy.dp_epsilon,
        delta=delta,
        batch_size=batch,
        sample_rate=sample_rate,
        epochs=privacy.dp_epochs,
        steps=privacy.dp_epochs * math.ceil(1 / sample_rate),
        noise_multiplier=float(sigma),
        max_grad_norm=privacy.dp_max_grad_norm,
    )


def check(rows: int, privacy: PrivacySettings, *, strict: bool) -> DPPlan:
    """The plan; a logged warning when it cannot learn, or with ``strict`` a refusal."""
    found = plan(rows, privacy)
    if not found.can_learn:
        if strict:
            raise DPWontLearnError(found.advice() + " Refused: privacy.dp_strict is on.")
        log.warning("%s", found.advice())
    return found


def dp_plan_of(privacy: PrivacySettings, dataset_counts: dict[str, Any]) -> dict[str, Any] | None:
    """The checked plan of a retrain on a dataset (by its counts), or None without DP or
    without private rows (nothing to spend epsilon on)."""
    if privacy.dp_epsilon is None:
        return None
    private = private_rows(dataset_counts)
    return check(private, privacy, strict=privacy.dp_strict).to_dict() if private else None


def dp_card(
    privacy: PrivacySettings, plan_dict: dict[str, Any] | None, spent: Any
) -> dict[str, Any] | None:
    """The model card's privacy section: the DP settings, the plan, and what was spent."""
    if privacy.dp_epsilon is None:
        return None
    settings = {k: v for k, v in privacy.model_dump().items() if k.startswith("dp_")}
    return {"settings": settings, "plan": plan_dict, "spent": asdict(spent) if spent else None}
