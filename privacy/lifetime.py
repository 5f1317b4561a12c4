"""A lifetime privacy ledger per user: every DP run that sampled a user's rows counts, forever.

Each DP run records how many rows of each user (tenant and user id, the id as its subject
hash) it could sample (``privacy_user_rows``); ``privacy_ledger`` holds the run's noise
multiplier, sample rate, steps and delta. A user's lifetime guarantee composes every run that
sampled them, warm-started or not, and holds at one delta: the smallest any of those runs
targeted (with the default, 1 / (10 n) of the largest run's n rows). Two valid accountings are
tried, and the smaller epsilon *at that delta* is reported:

- **RDP** (Mironov 2017): each run's Renyi curve is recomputed from its noise, sample rate
  and steps (opacus' analysis, the one the runs' accountant used). A user with ``k > 1`` rows
  in a run: with every row in every step (sample rate 1, head-only DP) the Gaussian
  mechanism's sensitivity is ``k`` clipped rows, so the curve scales by ``k^2``; with sampling
  the group bound for the next power of two ``2^c >= k`` applies (Prop. 11:
  ``eps_group(a) <= 3^c eps(2^c a)`` for ``a >= 2``). Curves add up over runs.
- **Basic composition of group privacy**: ``sum(k eps)`` at ``sum(k e^{(k-1) eps} delta)``,
  the per-run user-level figures of ``privacy_ledger`` — counted only when that delta is no
  larger than the target (one run of a one-row user), since a guarantee at a larger delta
  promises less (at delta 1, nothing).

Users with several rows per run get large lifetime epsilons: that is what example-level DP
gives a user, not an artefact. A run is planned before it trains (:mod:`privacy.dp_plan`), so
its curve is known in advance: :func:`over_ceiling` names the users it would take past a
lifetime ceiling, whom the run then leaves out.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.dp import group_privacy

__all__ = [
    "Lifetime",
    "RunSpend",
    "compose",
    "ledger_runs",
    "lifetimes",
    "over_ceiling",
    "run_lifetime_epsilon",
    "user_ledger",
    "user_runs",
]

User = tuple[str, str]  # (tenant_id, user_id)
_ORDERS = [2.0 + x / 4 for x in range(0, 40)] + [float(a) for a in range(12, 257)]


@dataclass(frozen=True)
class RunSpend:
    """One DP run, as it concerns one user: the run's mechanism and the user's rows in it."""

    run_id: str
    ts: datetime | None
    rows: int
    epsilon: float  # the run's example-level epsilon at ``delta``
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        user_epsilon, user_delta = group_privacy(self.epsilon, self.delta, max(1, self.rows))
        return {
            "run_id": self.run_id,
            "ts": self.ts.isoformat() if self.ts else None,
            "rows": self.rows,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "user_epsilon": user_epsilon,
            "user_delta": user_delta,
        }


@dataclass(frozen=True)
class Lifetime:
    """A user's guarantee over every DP run that sampled them."""

    epsilon: float
    delta: float
    method: str  # "rdp", "basic", or "none" (no DP run sampled the user)
    runs: list[RunSpend] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "method": self.method,
            "runs": [run.to_dict() for run in self.runs],
        }


def _rdp_curve(run: RunSpend) -> tuple[float, ...]:
    k = max(1, run.rows)
    if run.sample_rate >= 1.0:  # the plain Gaussian mechanism: sensitivity k rows
        return tuple(k * k * eps for eps in _group_curve(1.0, run.noise_multiplier, run.steps, 0))
    c = math.ceil(math.log2(k))
    return _group_curve(run.sample_rate, run.noise_multiplier, run.steps, c)


@functools.lru_cache(maxsize=4096)
def _group_curve(sample_rate: float, sigma: float, steps: int, c: int) -> tuple[float, ...]:
    """The RDP curve (at :data:`_ORDERS`) of a group of ``2^c`` rows in one run."""
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = [2**c * a for a in _ORDERS]
    curve = compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=orders)
    return tuple(3**c * float(eps) for eps in curve)


def _rdp_epsilon(runs: list[RunSpend], delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    total = [0.0] * len(_ORDERS)
    for run in runs:
        total = [a + b for a, b in zip(total, _rdp_curve(run), strict=True)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore")
        epsilon, _ = get_privacy_spent(orders=_ORDERS, rdp=total, delta=delta)
    return float(epsilon)


def compose(runs: list[RunSpend]) -> Lifetime:
    """The lifetime guarantee of a user sampled by ``runs`` (see the module docstring)."""
    if not runs:
        return Lifetime(0.0, 0.0, "none", [])
    basic_epsilon, basic_delta = 0.0, 0.0
    for run in runs:
        user_epsilon, user_delta = group_privacy(run.epsilon, run.delta, max(1, run.rows))
        basic_epsilon += user_epsilon
        basic_delta = min(1.0, basic_delta + user_delta)
    delta = min(run.delta for run in runs)
    rdp_epsilon = _rdp_epsilon(runs, delta)
    if basic_delta <= delta and basic_epsilon < rdp_epsilon:
        return Lifetime(basic_epsilon, basic_delta, "basic", runs)
    return Lifetime(rdp_epsilon, delta, "rdp", runs)


Subject = tuple[str, str]  # (tenant_id, subject hash of the user id)


def _runs_by_subject(
    warehouse: Warehouse, subjects: Iterable[Subject], until: datetime | None = None
) -> dict[Subject, list[RunSpend]]:
    wanted = set(subjects)
    found: dict[Subject, list[RunSpend]] = {subject: [] for subject in wanted}
    if not wanted:
        return found
    since = " AND l.ts <= ?" if until is not None else ""
    rows = warehouse.query(
        "SELECT u.tenant_id, u.subject, u.run_id, l.ts, u.n_rows, l.epsilon, l.delta,"
        " l.noise_multiplier, l.sample_rate, l.steps FROM privacy_user_rows u"
        " JOIN privacy_ledger l USING (run_id)"
        f" WHERE u.subject IN (SELECT unnest(?::VARCHAR[])){since} ORDER BY l.ts, u.run_id",
        [sorted({subject for _, subject in wanted}), *([until] if until is not None else [])],
    )
    for tenant, subject, run_id, ts, n, eps, delta, sigma, q, steps in rows:
        key = (str(tenant), str(subject))
        if key in found:
            found[key].append(RunSpend(str(run_id), ts, int(n), eps, delta, sigma, q, int(steps)))
    return found


def user_runs(warehouse: Warehouse, users: Iterable[User]) -> dict[User, list[RunSpend]]:
    """The DP runs that sampled each (tenant, user id), oldest first."""
    by_subject = {(tenant, subject_hash(user)): (tenant, user) for tenant, user in set(users)}
    runs = _runs_by_subject(warehouse, by_subject)
    return {user: runs[subject] for subject, user in by_subject.items()}


def lifetimes(warehouse: Warehouse, users: Iterable[User]) -> dict[User, Lifetime]:
    """Each (tenant, user id)'s lifetime guarantee."""
    return {user: compose(runs) for user, runs in user_runs(warehouse, users).items()}


def run_lifetime_epsilon(warehouse: Warehouse, run_ids: Sequence[str]) -> float | None:
    """The largest lifetime epsilon, as of the first of ``run_ids`` (a version's run, then
    its warm-start ancestors' runs), of every user those runs sampled; None when they recorded
    no users (no DP, or runs from before the lifetime ledger)."""
    if not run_ids:
        return None
    ran = warehouse.query("SELECT ts FROM privacy_ledger WHERE run_id = ?", [run_ids[0]])
    sampled = warehouse.query(
        "SELECT DISTINCT tenant_id, subject FROM privacy_user_rows"
        " WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(run_ids)],
    )
    if not ran or not sampled:
        return None
    subjects = [(str(t), str(s)) for t, s in sampled]
    runs = _runs_by_subject(warehouse, subjects, until=ran[0][0])
    return max(compose(spends).epsilon for spends in runs.values())


def over_ceiling(
    warehouse: Warehouse,
    rows_by_user: Mapping[User, int],
    planned: RunSpend,
    ceiling: float,
) -> dict[User, float]:
    """The users a planned run (its mechanism; ``rows`` ignored) would take past ``ceiling``,
    with the lifetime epsilon it would leave them at."""
    past = user_runs(warehouse, rows_by_user)
    over: dict[User, float] = {}
    for user, rows in rows_by_user.items():
        epsilon = compose([*past.get(user, []), replace(planned, rows=rows)]).epsilon
        if epsilon > ceiling + 1e-9:
            over[user] = epsilon
    return over


def _versions_of(warehouse: Warehouse, run_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
    for run_id, version in warehouse.query(
        "SELECT run_id, version FROM model_versions WHERE run_id IN (SELECT unnest(?::VARCHAR[]))"
        " ORDER BY version",
        [run_ids],
    ):
        found.setdefault(str(run_id), []).append(str(version))
    return found


def ledger_runs(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Every DP run's spend, newest first: the run's epsilon and delta, its user-level
    figures, how many users it sampled and the versions it trained."""
    runs = warehouse.query_dicts(
        "SELECT l.run_id, l.ts, l.epsilon, l.delta, l.user_epsilon, l.user_delta,"
        " l.rows_per_user, l.private_rows, l.public_rows,"
        " (SELECT count(*) FROM privacy_user_rows u WHERE u.run_id = l.run_id) AS users"
        " FROM privacy_ledger l ORDER BY l.ts DESC, l.run_id"
    )
    versions = _versions_of(warehouse, [str(run["run_id"]) for run in runs])
    return [{**run, "versions": versions.get(str(run["run_id"]), [])} for run in runs]


def user_ledger(warehouse: Warehouse, tenant_id: str, user_id: str) -> dict[str, Any]:
    """One user's lifetime guarantee and the runs (and versions) that spent it."""
    lifetime = lifetimes(warehouse, [(tenant_id, user_id)])[(tenant_id, user_id)]
    out = lifetime.to_dict()
    versions = _versions_of(warehouse, [run.run_id for run in lifetime.runs])
    for run in out["runs"]:
        run["versions"] = versions.get(run["run_id"], [])
    return {"tenant_id": tenant_id, "user_id": user_id, "lifetime": out}
