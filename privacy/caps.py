"""Consent and per-user / per-tenant contribution caps for training data.

No single user (or tenant) may dominate what a model learns: at most ``per_user`` of a user's
cases, and at most ``per_tenant`` of a tenant's, enter a training dataset per time window.
Synthetic cases written from a user's case are that user's (and tenant's), ranked after
their own cases.
Which cases are kept is a deterministic function of the data (a hash of each case id), so the
same warehouse gives the same dataset, and adding unrelated cases never reshuffles a user's
selection. Cases without training consent never pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tutorloop.infra.hashing import stable_rank
from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.warehouse import Warehouse

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CaseRef:
    """What the caps need to know about a case."""

    case_id: str
    user_id: str
    tenant_id: str
    ts: datetime
    consent_training: bool
    # Written by an LLM from one of the user's cases: it counts as the user's, after their own.
    synthetic: bool = False


@dataclass(frozen=True)
class ContributionCaps:
    per_user: int = 50
    per_tenant: int = 0  # 0 = no tenant cap
    window: timedelta = timedelta(days=7)

    @classmethod
    def from_settings(cls, cfg: PrivacySettings) -> ContributionCaps:
        return cls(
            per_user=cfg.max_cases_per_user,
            per_tenant=cfg.max_cases_per_tenant,
            window=timedelta(days=cfg.cap_window_days),
        )

    def __post_init__(self) -> None:
        if self.per_user < 1:
            raise ValueError("per_user must be at least 1")
        if self.per_tenant < 0:
            raise ValueError("per_tenant must be 0 (off) or more")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")


def _window(ts: datetime, window: timedelta) -> int:
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return int((aware - _EPOCH) // window)


def _keep_top(cases: Iterable[CaseRef], key: str, limit: int, window: timedelta) -> list[CaseRef]:
    groups: dict[tuple[str, int], list[CaseRef]] = defaultdict(list)
    for case in cases:
        groups[(getattr(case, key), _window(case.ts, window))].append(case)
    kept: list[CaseRef] = []
    for members in groups.values():
        kept.extend(sorted(members, key=lambda c: (c.synthetic, stable_rank(c.case_id)))[:limit])
    return kept


def apply_caps(cases: Sequence[CaseRef], caps: ContributionCaps) -> list[CaseRef]:
    """The consented cases that fit the caps, in the input's order."""
    eligible = [c for c in cases if c.consent_training]
    kept = _keep_top(eligible, "user_id", caps.per_user, caps.window)
    if caps.per_tenant:
        kept = _keep_top(kept, "tenant_id", caps.per_tenant, caps.window)
    keep_ids = {c.case_id for c in kept}
    return [c for c in eligible if c.case_id in keep_ids]


def eligible_case_ids(warehouse: Warehouse, caps: ContributionCaps) -> list[str]:
    """Case ids in the warehouse that may enter a training dataset under ``caps``."""
    rows = warehouse.query(
        "SELECT case_id, user_id, tenant_id, ts, consent_training, capture_reason = ?"
        " FROM cases ORDER BY case_id",
        [CaptureReason.SYNTHETIC],
    )
    refs = [CaseRef(*row) for row in rows]
    return [c.case_id for c in apply_caps(refs, caps)]
