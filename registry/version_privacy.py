"""The user-level epsilon a version's privacy gate reads: a lifetime, not one run's."""

from __future__ import annotations

from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.lifetime import run_lifetime_epsilon
from tutorloop.registry.store import ModelVersion, warm_start_chain

__all__ = ["user_epsilon"]


def user_epsilon(warehouse: Warehouse, version: ModelVersion, per_user: int) -> float | None:
    """The user-level epsilon the contract's ceiling applies to, or None without DP: the
    largest lifetime epsilon, as of the version's training run, of any user that run or a
    warm-start ancestor's run sampled (every DP run of theirs up to then counted).
    A run from before the lifetime ledger: its own user-level epsilon as the ledger recorded it
    (group privacy over the most rows one user gave; the contribution cap for older rows)."""
    if version.run_id is None:
        return None
    lifetime = run_lifetime_epsilon(
        warehouse, [v.run_id for v in warm_start_chain(warehouse, version) if v.run_id]
    )
    if lifetime is not None:
        return lifetime
    rows = warehouse.query(
        "SELECT coalesce(user_epsilon, epsilon * ?) FROM privacy_ledger WHERE run_id = ?",
        [per_user, version.run_id],
    )
    return float(rows[0][0]) if rows else None
