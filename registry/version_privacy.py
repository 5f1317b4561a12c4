"""The user-level epsilon a version's privacy gate reads: a lifetime, not one run's."""

from __future__ import annotations

from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.lifetime import run_lifetime_epsilon
from tutorloop.registry.store import ModelVersion, UnknownVersionError, get

__all__ = ["user_epsilon"]


def user_epsilon(warehouse: Warehouse, version: ModelVersion, per_user: int) -> float | None:
    """The user-level epsilon the contract's ceiling applies to, or None without DP: the
    largest lifetime epsilon, as of the version's training run, of any user that run or a
    warm-start ancestor's run sampled (every DP run of theirs up to then counted).
    A run from before the lifetime ledger: its own user-level epsilon as the ledger recorded it
    (group privacy over the most rows one user gave; the contribution cap for older rows)."""
    if version.run_id is None:
        return None
    lifetime = run_lifetime_epsilon(warehouse, _ancestry_runs(warehouse, version))
    if lifetime is not None:
        return lifetime
    rows = warehouse.query(
        "SELECT coalesce(user_epsilon, epsilon * ?) FROM privacy_ledger WHERE run_id = ?",
        [per_user, version.run_id],
    )
    return float(rows[0][0]) if rows else None


def _ancestry_runs(warehouse: Warehouse, version: ModelVersion) -> list[str]:
    """The training runs of a version and of the versions it was warm-started from, newest
    first."""
    runs: list[str] = []
    seen: set[str] = set()
    current: ModelVersion | None = version
    while current is not None and current.version not in seen:
        seen.add(current.version)
        if current.run_id is not None:
            runs.append(current.run_id)
        parent = current.card.get("warm_start_from")
        try:
            current = get(warehouse, parent) if isinstance(parent, str) else None
        except UnknownVersionError:
            current = None
    return runs
