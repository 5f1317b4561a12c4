"""Before a DP run: will it learn? The noise it must add, and the signal left over.

Two kinds of run (``privacy.dp_adapters``):

**Head-only DP** (the default): full-batch DP gradient descent on the head (:mod:`trainer.dp_head`).
Every step adds noise of standard deviation ``sigma x C`` to the sum of the ``n`` clipped
per-row gradients, i.e. ``sigma x C / n`` on the mean gradient; more steps need a larger
``sigma`` for the same epsilon. The run takes the most steps of ``5, 10, 20, ..., 160`` whose
noise on the mean gradient stays at or below :data:`MAX_HEAD_NOISE`; when even 5 steps carry
more than :data:`MIN_LEARNING_HEAD_NOISE` the run is not expected to learn. How they were set
(BENCHMARKS.md, issue #19; features of a Banking77 student, rows held out from the test
file): the best step count sat at a noise of 0.005-0.009 for 1,500 and 6,000 private rows
at epsilon 4 and 8; 1,500 rows at epsilon 1 (0.027) barely beat their start (+0.5 points),
while the full demo's retrains at 0.013-0.016 (900 and 720 rows at epsilon 4) still learned.

**DP-SGD over the adapters**: DP-SGD adds Gaussian noise of standard deviation
``sigma x C`` to the sum of a logical batch's clipped gradients (each at most ``C``).
Averaged over ``B`` rows, the noise per step is ``sigma / B`` of the clip norm, and over
``T`` steps it shrinks like ``1 / sqrt(T)`` while the signal adds up: the run's *signal* is
``B x sqrt(T) / sigma``. The noise multiplier ``sigma``
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

#: A DP-SGD run below this signal is not expected to learn (see the module docstring).
MIN_SIGNAL = 300.0
#: Head-only DP: the most noise on the mean gradient (sigma x C / n) a step may carry when
#: choosing how many steps to take.
MAX_HEAD_NOISE = 0.009
#: Head-only DP: above this noise even the fewest steps are not expected to learn.
MIN_LEARNING_HEAD_NOISE = 0.02
#: Head-only DP: the step counts tried, fewest first.
HEAD_STEPS = (5, 10, 20, 40, 80, 160)


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
    method: str = "adapters"  # "head": head-only DP; "adapters": DP-SGD over the adapters

    @property
    def signal(self) -> float:
        return self.batch_size * math.sqrt(max(1, self.steps)) / self.noise_multiplier

    @property
    def noise(self) -> float:
        """The noise's standard deviation on the mean gradient of one step."""
        return self.noise_multiplier * self.max_grad_norm / max(1, self.batch_size)

    @property
    def can_learn(self) -> bool:
        if self.method == "head":
            return self.noise <= MIN_LEARNING_HEAD_NOISE
        return self.signal >= MIN_SIGNAL

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "signal": round(self.signal, 1), "min_signal": MIN_SIGNAL,
                "noise": round(self.noise, 5), "max_head_noise": MAX_HEAD_NOISE,
                "min_learning_head_noise": MIN_LEARNING_HEAD_NOISE,
                "can_learn": self.can_learn}  # fmt: skip

    def advice(self) -> str:
        """One paragraph: the numbers, and what to change."""
        if self.method == "head":
            return (
                f"Head-only DP over {self.rows} private rows at epsilon {self.epsilon:g} "
                f"(delta {self.delta:.1e}) needs noise multiplier {self.noise_multiplier:.2f} "
                f"for {self.steps} full-batch steps: noise {self.noise:.4f} on the mean "
                f"gradient, above {MIN_LEARNING_HEAD_NOISE} (privacy.dp_plan; bench/dp.py "
                "measured runs above it barely beating their start). The model will barely "
                "move while the epsilon is spent. Capture more rows before the next retrain "
                "or raise privacy.dp_epsilon."
            )
        return (
            f"DP-SGD over {self.rows} private rows at epsilon {self.epsilon:g} "
            f"(delta {self.delta:.1e}) needs noise multiplier {self.noise_multiplier:.2f} with "
            f"expected batches of {self.batch_size} for {self.steps} steps: signal "
            f"{self.signal:.0f}, below {MIN_SIGNAL:.0f} (privacy.dp_plan; bench/dp.py measured "
            "DP runs far above it learning little). The model will barely move while the "
            "epsilon is spent. Capture more rows before the next retrain, raise "
            "privacy.dp_epsilon, or lower privacy.dp_epochs."
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


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, epochs: int) -> float:
    """The noise multiplier that spends ``epsilon`` over ``epochs`` passes at ``sample_rate``
    (opacus' RDP accountant, the one the run uses)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore")
        sigma = get_noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
            epochs=epochs, accountant="rdp",
        )  # fmt: skip
    return float(sigma)


def _head_plan(rows: int, privacy: PrivacySettings, epsilon: float, delta: float) -> DPPlan:
    """Head-only DP: full batches, the step count fixed or the most the noise allows."""
    clip = privacy.dp_head_max_grad_norm
    tried = (privacy.dp_head_steps,) if privacy.dp_head_steps else HEAD_STEPS
    steps, sigma = tried[0], noise_multiplier(epsilon, delta, 1.0, tried[0])
    for more in tried[1:]:
        more_sigma = noise_multiplier(epsilon, delta, 1.0, more)
        if more_sigma * clip / max(1, rows) > MAX_HEAD_NOISE:
            break
        steps, sigma = more, more_sigma
    return DPPlan(
        rows=rows, epsilon=epsilon, delta=delta, batch_size=rows, sample_rate=1.0,
        epochs=steps, steps=steps, noise_multiplier=sigma, max_grad_norm=clip, method="head",
    )  # fmt: skip


def plan(rows: int, privacy: PrivacySettings) -> DPPlan:
    """The plan of a DP run over ``rows`` private rows with ``privacy``'s DP settings."""
    if privacy.dp_epsilon is None:
        raise ValueError("privacy.dp_epsilon is not set: this is not a DP run")
    delta = privacy.dp_delta or default_delta(rows)
    if not privacy.dp_adapters:
        return _head_plan(rows, privacy, privacy.dp_epsilon, delta)
    batch = logical_batch(privacy, rows)
    sample_rate = batch / max(1, rows)
    sigma = noise_multiplier(privacy.dp_epsilon, delta, sample_rate, privacy.dp_epochs)
    return DPPlan(
        rows=rows,
        epsilon=privacy.dp_epsilon,
        delta=delta,
        batch_size=batch,
        sample_rate=sample_rate,
        epochs=privacy.dp_epochs,
        steps=privacy.dp_epochs * math.ceil(1 / sample_rate),
        noise_multiplier=sigma,
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
