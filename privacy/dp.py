"""DP-SGD for adapter training, with a privacy ledger and a cumulative budget.

The trainer calls, in order:

1. :func:`check_budget` — before any training: the **user-level** epsilon this run asks for,
   added to what runs of the last ``privacy.budget_window_days`` over overlapping data windows
   already spent (basic composition, a conservative sum), must fit ``privacy.epsilon_budget``;
   otherwise the run is refused with a clear message.
2. :func:`make_private` — opacus ``make_private_with_epsilon`` on the peft model with
   ``grad_sample_mode="hooks"``; the model must already be on its device (opacus with peft
   silently trains nothing when the model is moved afterwards).
3. :func:`trainable_snapshot` before training and :func:`assert_adapters_changed` after: the
   self-check for that silent failure.
4. :func:`account` (training returns it) and :func:`record_entry` (the cycle writes it) — one
   ``privacy_ledger`` row: epsilon actually spent (from the RDP accountant), delta, noise
   multiplier, sample rate, steps, and the user-level guarantee.

DP-SGD protects one *example*; a user may contribute up to ``privacy.max_cases_per_user``
rows. The user-level guarantee follows from group privacy (Dwork & Roth 2014, Thm 2.2 and its
(epsilon, delta) form): a mechanism that is (e, d)-DP per example is (k e, k e^{(k-1) e} d)-DP
for a group of k examples, k being the most training rows one user has in the dataset. The
ledger stores both; the budget is spent in user-level epsilon. For large k e the user-level
delta reaches 1 (stored as 1.0) and the guarantee is vacuous: the ledger says so rather than
hiding it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.warehouse import Warehouse, insert_arrow


class BudgetExceededError(TutorloopError):
    """The run would spend more epsilon than the budget for its data window allows."""


class AdapterUnchangedError(TutorloopError):
    """Training finished but no trainable weight moved (opacus + peft silent failure)."""


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    accountant: str
    rows_per_user: int = 1  # k: the most training rows one user contributed
    user_epsilon: float | None = None
    user_delta: float | None = None
    public_rows: int | None = None  # trained on without noise (imported seed/gold rows)
    private_rows: int | None = None  # the DP-SGD sample
    # Private rows an earlier run trained on too: each run spends epsilon on them again.
    replayed_private_rows: int | None = None


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(k e, k e^{(k-1) e} d): the guarantee for any group of ``k`` examples (one user)."""
    if k < 1:
        raise ValueError("a group has at least one member")
    exponent = (k - 1) * epsilon  # capped at 1: a delta of 1 promises nothing
    user_delta = min(1.0, k * delta * math.exp(exponent)) if exponent < 700 else 1.0
    return k * epsilon, user_delta


def at_user_level(entry: LedgerEntry, rows_per_user: int) -> LedgerEntry:
    """``entry`` with the user-level guarantee for users of at most ``rows_per_user`` rows."""
    k = max(1, rows_per_user)
    user_epsilon, user_delta = group_privacy(entry.epsilon, entry.delta, k)
    return replace(entry, rows_per_user=k, user_epsilon=user_epsilon, user_delta=user_delta)


def default_delta(n_rows: int) -> float:
    """Below 1/n (a delta of 1/n allows leaking one whole row): 1 / (10 n)."""
    return 1.0 / (10 * max(1, n_rows))


def spent(
    warehouse: Warehouse,
    window_start: datetime,
    window_end: datetime,
    *,
    since: datetime | None = None,
) -> float:
    """User-level epsilon already spent by runs whose data window overlaps ``[start, end]``
    (and, with ``since``, that ran since then: the budget window).

    Closed intervals: a window can be a single instant (rows imported together), and two runs
    on the same instant's data share it. Rows from before user-level accounting count their
    example-level epsilon.
    """
    row = warehouse.query(
        "SELECT coalesce(sum(coalesce(user_epsilon, epsilon)), 0) FROM privacy_ledger "
        "WHERE coalesce(window_start, ?) <= ? AND coalesce(window_end, ?) >= ? AND ts >= ?",
        [window_start, window_end, window_end, window_start, since or datetime.min],
    )
    return float(row[0][0])


def total_epsilon(warehouse: Warehouse, *, user_level: bool = False) -> float:
    """Epsilon spent by every run in the ledger (a plain sum: basic composition)."""
    column = "coalesce(user_epsilon, epsilon)" if user_level else "epsilon"
    row = warehouse.query(f"SELECT coalesce(sum({column}), 0) FROM privacy_ledger")
    return float(row[0][0])


def check_budget(
    warehouse: Warehouse,
    epsilon: float,
    *,
    budget: float,
    window_start: datetime,
    window_end: datetime,
    rows_per_user: int = 1,
    budget_window_days: float | None = None,
) -> float:
    """Refuse a run whose user-level epsilon (``rows_per_user`` x ``epsilon``) would exceed
    the budget; return the budget left after it. Only runs of the last
    ``budget_window_days`` count (the policy's spending window)."""
    since = datetime.now(UTC) - timedelta(days=budget_window_days) if budget_window_days else None
    asked = group_privacy(epsilon, 0.0, max(1, rows_per_user))[0]
    already = spent(warehouse, window_start, window_end, since=since)
    if already + asked > budget + 1e-9:
        per_user = f" ({rows_per_user} rows per user x {epsilon:g})" if rows_per_user > 1 else ""
        raise BudgetExceededError(
            f"privacy budget exceeded: this run asks for user-level epsilon {asked:g}{per_user}, "
            f"runs over {window_start:%Y-%m-%d}..{window_end:%Y-%m-%d} already spent "
            f"{already:g} of {budget:g}; lower privacy.dp_epsilon or "
            "privacy.max_cases_per_user, wait for a new data window, or raise "
            "privacy.epsilon_budget"
        )
    return budget - already - asked


@dataclass
class PrivateTraining:
    """What opacus returned: use these model/optimizer/loader objects for training."""

    model: Any
    optimizer: Any
    data_loader: Any
    engine: Any
    delta: float
    max_grad_norm: float


def make_private(
    model: Any,
    optimizer: Any,
    data_loader: Any,
    *,
    epsilon: float,
    delta: float,
    epochs: int,
    max_grad_norm: float,
) -> PrivateTraining:
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    private_model, private_optimizer, private_loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=data_loader,
        target_epsilon=epsilon,
        target_delta=delta,
        epochs=epochs,
        max_grad_norm=max_grad_norm,
        grad_sample_mode="hooks",
    )
    return PrivateTraining(
        private_model, private_optimizer, private_loader, engine, delta, max_grad_norm
    )


def trainable_snapshot(model: Any) -> dict[str, Any]:
    """Copies of every trainable parameter, to compare after training."""
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def assert_adapters_changed(before: dict[str, Any], model: Any) -> int:
    """Raise unless at least one adapter (LoRA) weight changed; return how many changed."""
    import torch

    current = dict(model.named_parameters())
    changed = 0
    adapters = 0
    for name, old in before.items():
        # opacus wraps the model: parameter names gain a `_module.` prefix.
        new = current.get(name) if name in current else current.get(f"_module.{name}")
        if new is None:
            continue
        is_adapter = "lora_" in name
        adapters += is_adapter
        if is_adapter and not torch.equal(old, new.detach()):
            changed += 1
    if adapters == 0:
        raise AdapterUnchangedError("no adapter weights found to check (is this a peft model?)")
    if changed == 0:
        raise AdapterUnchangedError(
            f"none of {adapters} adapter tensors changed during DP training: the run is "
            "void (a known opacus + peft failure, e.g. the model was moved after wrapping)"
        )
    return changed


def account(private: PrivateTraining, run_id: str) -> LedgerEntry:
    """The privacy a finished DP run spent, from its accountant (RDP): a ledger entry."""
    accountant = private.engine.accountant
    steps = sum(int(n) for _, _, n in getattr(accountant, "history", []))
    return LedgerEntry(
        run_id=run_id,
        epsilon=float(private.engine.get_epsilon(private.delta)),
        delta=private.delta,
        noise_multiplier=float(private.optimizer.noise_multiplier),
        sample_rate=float(1.0 / len(private.data_loader)),
        steps=steps,
        max_grad_norm=private.max_grad_norm,
        accountant=str(accountant.mechanism()),
        private_rows=len(private.data_loader.dataset),  # the sample the accountant covers
    )


def record_entry(
    warehouse: Warehouse,
    entry: LedgerEntry,
    *,
    window_start: datetime | None,
    window_end: datetime | None,
    user_rows: Mapping[tuple[str, str], int] | None = None,
) -> LedgerEntry:
    """Write a run's privacy cost to ``privacy_ledger`` (idempotent per run id) and, in the
    same transaction, how many rows of each (tenant, user id) it could sample
    (``privacy_user_rows``, the lifetime ledger: :mod:`privacy.lifetime`)."""
    users = sorted((user_rows or {}).items())
    sampled = pa.table(
        {
            "run_id": [entry.run_id] * len(users),
            "tenant_id": [tenant for (tenant, _), _ in users],
            "subject": [subject_hash(user) for (_, user), _ in users],
            "n_rows": pa.array([n for _, n in users], pa.int64()),
        }
    )
    with warehouse.transaction() as con:
        if users:
            insert_arrow(con, "privacy_user_rows", sampled)
        con.execute(
            "INSERT INTO privacy_ledger (run_id, window_start, window_end, epsilon, delta, "
            "noise_multiplier, sample_rate, steps, max_grad_norm, accountant, rows_per_user, "
            "user_epsilon, user_delta, public_rows, private_rows, replayed_private_rows) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                entry.run_id,
                window_start,
                window_end,
                entry.epsilon,
                entry.delta,
                entry.noise_multiplier,
                entry.sample_rate,
                entry.steps,
                entry.max_grad_norm,
                entry.accountant,
                entry.rows_per_user,
                entry.user_epsilon,
                entry.user_delta,
                entry.public_rows,
                entry.private_rows,
                entry.replayed_private_rows,
            ],
        )
    return entry


def record_run(
    warehouse: Warehouse,
    run_id: str,
    private: PrivateTraining,
    *,
    window_start: datetime | None,
    window_end: datetime | None,
) -> LedgerEntry:
    """:func:`account` then :func:`record_entry`, for a run that has its warehouse at hand."""
    return record_entry(
        warehouse, account(private, run_id), window_start=window_start, window_end=window_end
    )
