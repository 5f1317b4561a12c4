"""Whose rows a DP run may sample: every user's, but those it would take past their lifetime.

The contract's ``privacy.max_user_epsilon`` is a lifetime ceiling (:mod:`privacy.lifetime`):
before a DP run trains, each user's lifetime epsilon is composed with the run's planned
mechanism (its noise, sample rate and steps are fixed before training); a user it would take
past the ceiling is left out of this run, and the run trains on everyone else. Their rows stay
in the dataset and train runs without DP. Leaving rows out changes the plan (fewer rows, a
little more noise per row), so the check repeats until no one else passes the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.dp_plan import plan, private_rows
from tutorloop.privacy.lifetime import RunSpend, over_ceiling
from tutorloop.registry.contract import load_contract
from tutorloop.trainer.dataset import DatasetVersion
from tutorloop.trainer.dataset_store import private_rows_by_user

__all__ = ["DPSample", "dp_sample"]

User = tuple[str, str]


@dataclass(frozen=True)
class DPSample:
    """The private rows a DP run samples, by user, and who it leaves out."""

    cases_by_user: dict[User, list[str]]  # the users it samples
    left_out: dict[User, float]  # user -> the lifetime epsilon this run would have left them at
    ceiling: float | None

    @property
    def rows_by_user(self) -> dict[User, int]:
        return {user: len(cases) for user, cases in self.cases_by_user.items()}

    @property
    def rows_per_user(self) -> int:
        """k of group privacy for this run: the most rows one sampled user gives it."""
        return max(self.rows_by_user.values(), default=1)

    def dropped(self, all_cases: dict[User, list[str]]) -> frozenset[str]:
        return frozenset(c for user in self.left_out for c in all_cases.get(user, []))

    def counts(self, dataset_counts: dict[str, Any]) -> dict[str, Any]:
        """The dataset's counts as this run sees them (its private rows less those left out)."""
        kept = sum(self.rows_by_user.values())
        return {**dataset_counts, "private_train": min(private_rows(dataset_counts), kept)}

    def card(self) -> dict[str, Any]:
        return {"lifetime_ceiling": self.ceiling, "users_left_out": len(self.left_out)}


def _planned(rows: int, settings: Settings) -> RunSpend:
    p = plan(rows, settings.privacy)
    return RunSpend(
        "planned", None, 1, p.epsilon, p.delta, p.noise_multiplier, p.sample_rate, p.steps
    )


def dp_sample(
    settings: Settings, warehouse: Warehouse, dataset: DatasetVersion
) -> tuple[DPSample, frozenset[str]] | None:
    """The sample of a DP run on ``dataset`` and the case ids it leaves out; None without DP."""
    if settings.privacy.dp_epsilon is None:
        return None
    everyone = private_rows_by_user(warehouse, dataset.dataset_hash)
    ceiling = load_contract(settings).privacy.max_user_epsilon
    left_out: dict[User, float] = {}
    while ceiling is not None:
        kept = {user: len(c) for user, c in everyone.items() if user not in left_out}
        rows = sum(kept.values())
        if rows == 0:
            break
        over = over_ceiling(warehouse, kept, _planned(rows, settings), ceiling)
        if not over:
            break
        left_out.update(over)
    sample = DPSample(
        {user: cases for user, cases in everyone.items() if user not in left_out},
        left_out,
        ceiling,
    )
    return sample, sample.dropped(everyone)
