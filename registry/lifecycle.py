"""Promotion, rollback and history: what on-call touches.

The champion is the one ``model_versions`` row with status ``champion``. Every change is a
``promotions`` row (action, from, to, actor, time, reason, forced) written in the same
transaction as the status change, and then published to ``<artifacts>/champion.json`` (an
atomic rename) which serving processes poll: a rollback is a few milliseconds of SQL and a
file rename, and servers pick it up within ``serving.reload_poll_s``.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import CHAMPION_CHANGES, ModelStatus, PromotionAction
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.artifact_store import ArtifactStore
from tutorloop.registry.contract import load_contract
from tutorloop.registry.erasure_marks import marked_versions
from tutorloop.registry.gates import (
    GateContext,
    GateResult,
    evaluate_gates,
    judged_under,
    stored_gates,
)
from tutorloop.registry.rewrite import rewritten_copy
from tutorloop.registry.store import ModelVersion, champion, get
from tutorloop.registry.version_privacy import user_epsilon

POINTER = "champion.json"


class PromotionRefusedError(TutorloopError):
    """The version may not be promoted (failed or missing gates, wrong status)."""


class NothingToRollBackError(TutorloopError):
    """No earlier champion to return to."""


@dataclass(frozen=True)
class Change:
    action: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str | None
    forced: bool
    ts: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "ts": self.ts.isoformat()}


def pointer_path(settings: Settings) -> Path:
    return settings.models_artifacts_dir / POINTER


def publish_pointer(
    settings: Settings, version: ModelVersion | None, *, card_sha256: str | None = None
) -> None:
    """Write the champion pointer atomically (servers poll it); with an artifact store, its
    copy there too (``card_sha256``: the version's card as uploaded)."""
    store = ArtifactStore.from_settings(settings)
    if store is not None:
        if version is not None and card_sha256 is None:
            card_sha256 = store.publish_version(version.artifact_dir)
        store.write_pointer(POINTER, {
            "version": version.version if version else None, "card_sha256": card_sha256,
            "published_at": datetime.now(UTC).isoformat(),
        })  # fmt: skip
    path = pointer_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": version.version if version else None,
        "artifact_dir": str(version.artifact_dir) if version else None,
        "published_at": datetime.now(UTC).isoformat(),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_pointer(settings: Settings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(pointer_path(settings).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def _change(
    warehouse: Warehouse,
    settings: Settings,
    action: str,
    to: str,
    actor: str,
    reason: str | None,
    forced: bool,
    *,
    from_status: str = ModelStatus.RETIRED,
) -> Change:
    now = datetime.now(UTC)
    contract_hash = load_contract(settings).digest  # read the file before taking the lock
    # Upload first: the store's pointer must never name a version it does not hold.
    store = ArtifactStore.from_settings(settings)
    card_sha256 = store.publish_version(get(warehouse, to).artifact_dir) if store else None
    with warehouse.transaction() as con:
        current = con.execute(
            "SELECT version FROM model_versions WHERE status = ?", [ModelStatus.CHAMPION]
        ).fetchall()
        previous = current[0][0] if current else None
        if previous == to:
            raise PromotionRefusedError(f"{to} is already the champion")
        con.execute(
            "UPDATE model_versions SET status = ? WHERE status = ?",
            [from_status, ModelStatus.CHAMPION],
        )
        con.execute(
            "UPDATE model_versions SET status = ? WHERE version = ?", [ModelStatus.CHAMPION, to]
        )
        con.execute(
            "INSERT INTO promotions (promotion_id, ts, action, from_version, to_version, actor,"
            " reason, forced, contract_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                uuid.uuid4().hex,
                now,
                action,
                previous,
                to,
                actor,
                reason,
                forced,
                contract_hash,
            ],
        )
    publish_pointer(settings, get(warehouse, to), card_sha256=card_sha256)
    return Change(action, previous, to, actor, reason, forced, now)


def promote(
    warehouse: Warehouse,
    settings: Settings,
    version: str,
    *,
    actor: str,
    reason: str | None = None,
    force: bool = False,
) -> Change:
    """Make ``version`` the champion. Refused if a gate failed or none ran, unless forced with
    a reason (recorded)."""
    problem = check_promotable(warehouse, version, force=force, reason=reason)
    return _change(
        warehouse,
        settings,
        PromotionAction.PROMOTE,
        version,
        actor,
        reason,
        force and bool(problem),
    )


def check_promotable(
    warehouse: Warehouse, version: str, *, force: bool, reason: str | None
) -> str | None:
    """Why ``version`` may not serve (None: it may); raises unless forced with a reason."""
    target = get(warehouse, version)
    if target.status == ModelStatus.CHAMPION:
        raise PromotionRefusedError(f"{version} is already the champion")
    gates = stored_gates(warehouse, version)
    failed = [g.gate for g in gates if not g.passed]
    problem = (
        f"{version} failed gates: {', '.join(failed)}"
        if failed
        else (f"{version} has no gate results (run `tutorloop registry gates {version} --run`)"
              if not gates else None)
    )  # fmt: skip
    if target.status == ModelStatus.REJECTED and problem is None:
        problem = f"{version} was rejected"
    erasures = marked_versions(warehouse).get(version)
    if erasures and problem is None:
        problem = f"{version} was trained on rows of an erased user (erasure {erasures[-1]})"
    if problem is not None:
        if not force:
            raise PromotionRefusedError(f"{problem}; use --force --reason TEXT to override")
        if not reason:
            raise PromotionRefusedError("--force needs --reason TEXT (it is recorded)")
    return problem


def was_champion(warehouse: Warehouse, version: str) -> bool:
    """Whether ``version`` ever served (a promotion or rollback made it champion)."""
    return bool(
        warehouse.query(
            "SELECT 1 FROM promotions WHERE to_version = ? AND action IN (?, ?) LIMIT 1",
            [version, *CHAMPION_CHANGES],
        )
    )


def rollback(
    warehouse: Warehouse,
    settings: Settings,
    *,
    actor: str,
    to: str | None = None,
    reason: str | None = None,
    force: bool = False,
) -> Change:
    """Return to ``to`` or, by default, the champion before the current one.

    ``to`` must have been champion before or have passed every one of its gates under the
    contract now in force: a rollback is on-call's quick way back to something known good, not
    a way around the gates. Anything else needs ``force`` and a ``reason``, recorded as forced.
    It is urgent work: a compaction running meanwhile (erasure, purge) yields to it.
    """
    with warehouse.urgent():
        return _rollback(warehouse, settings, actor=actor, to=to, reason=reason, force=force)


def _rollback(
    warehouse: Warehouse,
    settings: Settings,
    *,
    actor: str,
    to: str | None,
    reason: str | None,
    force: bool,
) -> Change:
    current = champion(warehouse)
    if to is None:
        if current is None:
            raise NothingToRollBackError("nothing to roll back: there is no champion")
        rows = warehouse.query(
            "SELECT from_version FROM promotions WHERE to_version = ? AND from_version IS NOT NULL"
            " AND action IN (?, ?) ORDER BY ts DESC LIMIT 1",
            [current.version, *CHAMPION_CHANGES],
        )
        if not rows:
            raise NothingToRollBackError(
                f"nothing to roll back to: {current.version} was the first champion"
            )
        to = str(rows[0][0])
    target = get(warehouse, to)
    if current is not None and target.version == current.version:
        raise NothingToRollBackError(f"{to} is already the champion")
    if target.status == ModelStatus.REJECTED:
        raise PromotionRefusedError(f"{to} was rejected; promote it with --force instead")
    forced = False
    erasures = marked_versions(warehouse).get(target.version)
    if erasures:
        if not force or not reason:
            raise PromotionRefusedError(
                f"{to} was trained on rows of an erased user (erasure {erasures[-1]}); its "
                "weights still hold them: use --force --reason TEXT to return to it anyway"
            )
        forced = True
    if not was_champion(warehouse, target.version):
        gates = stored_gates(warehouse, target.version)
        failed = [g.gate for g in gates if not g.passed]
        judged = judged_under(warehouse, target.version)[0]
        contract = load_contract(settings)
        stale = bool(gates) and judged != contract.digest
        if not gates or failed or stale:
            why = (
                f"failed gates: {', '.join(failed)}" if failed
                else "no gate results" if not gates
                else f"gates judged under another contract than {contract.ref}"
            )  # fmt: skip
            if not force:
                raise PromotionRefusedError(
                    f"{to} never served and has {why}; use --force --reason TEXT to override"
                )
            if not reason:
                raise PromotionRefusedError("--force needs --reason TEXT (it is recorded)")
            forced = True
    return _change(
        warehouse, settings, PromotionAction.ROLLBACK, target.version, actor, reason, forced,
        from_status=ModelStatus.RETIRED,
    )  # fmt: skip


def history(warehouse: Warehouse) -> list[Change]:
    rows = warehouse.query(
        "SELECT action, from_version, to_version, actor, reason, forced, ts FROM promotions"
        " ORDER BY ts"
    )
    return [Change(*row) for row in rows]


def champion_at(warehouse: Warehouse, at: datetime) -> str | None:
    rows = warehouse.query(
        "SELECT to_version FROM promotions WHERE ts <= ? AND action IN (?, ?)"
        " ORDER BY ts DESC LIMIT 1",
        [at, *CHAMPION_CHANGES],
    )
    return str(rows[0][0]) if rows else None


@dataclass
class CandidateVerdict:
    version: str
    passed: bool
    gates: list[GateResult]
    promoted: bool = False
    rejected_reason: str | None = None
    not_promoted_reason: str | None = None  # passed, but auto-promotion held it back

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passed": self.passed,
            "promoted": self.promoted,
            "rejected_reason": self.rejected_reason,
            "not_promoted_reason": self.not_promoted_reason,
            "gates": [g.to_dict() for g in self.gates],
        }


def evaluate_candidate(
    warehouse: Warehouse,
    settings: Settings,
    version: str,
    *,
    promote_if_passed: bool = False,
    actor: str = "tutorloop",
) -> CandidateVerdict:
    """Export, quantize, check parity, evaluate every gate; optionally promote on success.

    A parity failure rejects the candidate (status ``rejected``, reason in its gate row). The
    champion is refused: exporting rewrites a version's ONNX files and card, and the
    champion's are the ones serving.
    """
    from tutorloop.registry.export import export_version
    from tutorloop.registry.version_rows import evaluation_set, trained_with_dp

    candidate = get(warehouse, version)
    if candidate.status == ModelStatus.CHAMPION:
        raise PromotionRefusedError(
            f"{version} is the champion: its served files are never rewritten; roll back or "
            "promote another version first to re-run its gates"
        )
    contract = load_contract(settings)
    with rewritten_copy(candidate.artifact_dir) as staging:
        exported = export_version(
            warehouse, replace(candidate, artifact_dir=staging),
            min_parity=contract.parity.min_agreement, tie_margin=contract.parity.tie_margin,
            max_accuracy_drop=contract.parity.max_accuracy_drop,
            open_set_max_accuracy_drop=contract.fallback.open_set_max_accuracy_drop,
            oos_label=contract.task.oos_label,
        )  # fmt: skip
    candidate = get(warehouse, version)
    current = champion(warehouse)
    ctx = GateContext(
        contract,
        evaluation_set(
            warehouse, candidate.dataset_hash, public_only=trained_with_dp(candidate.card)
        ),
        threads=settings.serving.threads,
        user_epsilon=user_epsilon(warehouse, candidate, settings.privacy.max_cases_per_user),
        retrieval=settings.serving.retrieval,
    )  # fmt: skip
    gates = evaluate_gates(
        warehouse, ctx, candidate, exported,
        current if current and current.version != version else None,
    )  # fmt: skip
    verdict = CandidateVerdict(version, all(g.passed for g in gates), gates)
    if exported.parity < contract.parity.min_agreement:
        verdict.rejected_reason = (
            f"int8/fp32 argmax agreement {exported.parity:.4f} < "
            f"{contract.parity.min_agreement:g} on {exported.n_parity - exported.n_ties} "
            f"decisive evaluation rows ({exported.n_ties} near-ties not counted; "
            f"{contract.ref} parity.min_agreement)"
        )
        with warehouse.transaction() as con:
            con.execute(
                "UPDATE model_versions SET status = ? WHERE version = ?",
                [ModelStatus.REJECTED, version],
            )
        return verdict
    if verdict.passed and promote_if_passed and candidate.version in marked_versions(warehouse):
        verdict.not_promoted_reason = "trained on rows of an erased user"
    elif verdict.passed and promote_if_passed:
        promote(warehouse, settings, version, actor=actor, reason="passed every gate")
        verdict.promoted = True
    return verdict
