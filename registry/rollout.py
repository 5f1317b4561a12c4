"""Shadow and canary releases: a version scored on live traffic before it becomes champion.

``start_rollout`` admits a version that could be promoted (same gates, or ``--force`` with a
reason) as a *shadow* (scored on every request, never answers) or a *canary* (answers a sticky
share of users: a hash of the user id). It writes a ``rollouts`` row and the rollout pointer
(``<artifacts>/models/rollout.json``) that serving replicas poll, like the champion pointer.
Replicas write a ``rollout_windows`` row per window; :func:`judge` reads the latest judged
window against the contract's ``[live]`` clause: a breach ends the rollout (a
``rollout_rollback`` row in ``promotions``, with the reason); a rollout that held for its
``auto_promote_after`` is promoted. ``end_rollout`` does either by command.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import PromotionAction, RolloutOutcome
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.artifact_store import ArtifactStore
from tutorloop.registry.contract import LiveClause, load_contract
from tutorloop.registry.erasure_marks import marked_versions
from tutorloop.registry.lifecycle import Change, check_promotable, promote
from tutorloop.registry.store import champion, get

POINTER = "rollout.json"
MODES = ("shadow", "canary")


class RolloutError(TutorloopError):
    """A rollout cannot start or end as asked."""


@dataclass(frozen=True)
class RolloutState:
    rollout_id: str
    version: str
    artifact_dir: str
    champion: str
    mode: str
    percent: float  # share of users a canary answers (0 for a shadow)
    started_at: str
    auto_promote_after_s: float | None
    card_sha256: str = ""  # the version's card in the artifact store, when there is one

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)


def rollout_pointer(settings: Settings) -> Path:
    return settings.models_artifacts_dir / POINTER


def read_rollout(settings: Settings) -> RolloutState | None:
    try:
        data = json.loads(rollout_pointer(settings).read_text())
        return RolloutState(**data) if data else None
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _publish(settings: Settings, state: RolloutState | None) -> None:
    store = ArtifactStore.from_settings(settings)
    if store is not None:
        store.write_pointer(POINTER, asdict(state) if state else None)
    path = rollout_pointer(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state) if state else None))
    tmp.replace(path)


def start_rollout(
    warehouse: Warehouse,
    settings: Settings,
    version: str,
    *,
    mode: str,
    percent: float = 0.0,
    auto_promote_after_s: float | None = None,
    actor: str,
    reason: str | None = None,
    force: bool = False,
) -> RolloutState:
    """Put ``version`` in shadow or canary next to the champion (one rollout at a time)."""
    if mode not in MODES:
        raise RolloutError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "canary" and not 0 < percent <= 100:
        raise RolloutError(f"a canary answers a share of users in (0, 100] %, not {percent}")
    current = champion(warehouse)
    if current is None:
        raise RolloutError("there is no champion to compare with: promote a version first")
    if read_rollout(settings) is not None:
        raise RolloutError("a rollout is running: end it first (`tutorloop registry canary`)")
    problem = check_promotable(warehouse, version, force=force, reason=reason)
    target = get(warehouse, version)
    store = ArtifactStore.from_settings(settings)
    card_sha256 = store.publish_version(target.artifact_dir) if store else ""
    state = RolloutState(
        rollout_id=uuid.uuid4().hex, version=version, artifact_dir=str(target.artifact_dir),
        champion=current.version, mode=mode, percent=percent if mode == "canary" else 0.0,
        started_at=datetime.now(UTC).isoformat(), auto_promote_after_s=auto_promote_after_s,
        card_sha256=card_sha256,
    )  # fmt: skip
    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO rollouts (rollout_id, version, champion, mode, percent,"
            " auto_promote_after_s, started_at, actor, reason, forced, contract_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [state.rollout_id, version, current.version, mode, state.percent,
             auto_promote_after_s, state.started, actor, reason, bool(force and problem),
             load_contract(settings).digest],
        )  # fmt: skip
    _publish(settings, state)
    return state


def end_rollout(
    warehouse: Warehouse,
    settings: Settings,
    outcome: RolloutOutcome,
    *,
    actor: str,
    reason: str,
) -> Change | None:
    """Promote the rollout's version, or end it with the champion kept (rolled back/aborted)."""
    state = read_rollout(settings)
    if state is None:
        raise RolloutError("no rollout is running")
    change: Change | None = None
    if outcome == RolloutOutcome.PROMOTED:
        rows = warehouse.query("SELECT forced FROM rollouts WHERE rollout_id = ?",
                               [state.rollout_id])  # fmt: skip
        forced = bool(rows and rows[0][0])
        change = promote(warehouse, settings, state.version, actor=actor, reason=reason,
                         force=forced)  # fmt: skip
    _publish(settings, None)  # replicas stop scoring it before the rows are written
    now = datetime.now(UTC)
    with warehouse.transaction() as con:
        con.execute(
            "UPDATE rollouts SET ended_at = ?, outcome = ?, end_reason = ? WHERE rollout_id = ?",
            [now, str(outcome), reason, state.rollout_id],
        )
        if outcome != RolloutOutcome.PROMOTED:
            action = (PromotionAction.ROLLOUT_ROLLBACK if outcome == RolloutOutcome.ROLLED_BACK
                      else PromotionAction.ROLLOUT_ABORT)  # fmt: skip
            con.execute(
                "INSERT INTO promotions (promotion_id, ts, action, from_version, to_version,"
                " actor, reason, forced, contract_hash) VALUES (?, ?, ?, ?, ?, ?, ?, false, ?)",
                [uuid.uuid4().hex, now, str(action), state.version, state.champion, actor,
                 f"{state.mode}: {reason}", load_contract(settings).digest],
            )  # fmt: skip
            change = Change(str(action), state.version, state.champion, actor, reason, False, now)
    return change


# Replicas close their windows on their own clocks: windows that ended in the same
# ``serving.window_s`` slot of wall-clock time are summed.
_WINDOW_SUMS = """
SELECT min(window_start), sum(requests), sum(challenger_answered), sum(errors),
       sum(agreement * requests) / sum(requests),
       sum(champion_confidence * requests) / sum(requests),
       sum(challenger_confidence * requests) / sum(requests),
       sum(champion_abstention * requests) / sum(requests),
       sum(challenger_abstention * requests) / sum(requests),
       max(challenger_p95_ms), max(champion_p95_ms)
FROM rollout_windows WHERE rollout_id = ?
GROUP BY floor(epoch(window_end) / ?) ORDER BY 1
"""
_COLUMNS = ("window_start", "requests", "challenger_answered", "errors", "agreement",
            "champion_confidence", "challenger_confidence", "champion_abstention",
            "challenger_abstention", "challenger_p95_ms", "champion_p95_ms")  # fmt: skip


def rollout_windows(warehouse: Warehouse, rollout_id: str, window_s: float) -> list[dict[str, Any]]:
    """The rollout's windows, replicas summed (request-weighted means; worst replica's p95)."""
    rows = warehouse.query(_WINDOW_SUMS, [rollout_id, window_s])
    return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]


def breaches(window: dict[str, Any], live: LiveClause, max_p95_ms: float) -> list[str]:
    """The contract's live thresholds ``window`` misses (empty: it holds)."""
    out: list[str] = []
    n = int(window["requests"])
    if window["agreement"] is not None and window["agreement"] < live.min_agreement:
        out.append(f"agreement {window['agreement']:.3f} < {live.min_agreement}")
    rise = (window["challenger_abstention"] or 0.0) - (window["champion_abstention"] or 0.0)
    if rise > live.max_abstention_increase:
        out.append(f"abstention +{rise:.3f} > {live.max_abstention_increase}")
    drop = (window["champion_confidence"] or 0.0) - (window["challenger_confidence"] or 0.0)
    if drop > live.max_confidence_drop:
        out.append(f"confidence -{drop:.3f} > {live.max_confidence_drop}")
    if n and int(window["errors"]) / n > live.max_error_rate:
        out.append(f"error rate {int(window['errors']) / n:.3f} > {live.max_error_rate}")
    p95 = window["challenger_p95_ms"]
    if p95 is not None and p95 > max_p95_ms:
        out.append(f"p95 {p95:.1f} ms > {max_p95_ms} ms")
    return out


def judge(
    warehouse: Warehouse, settings: Settings, *, actor: str = "rollout-judge"
) -> Change | None:
    """End the running rollout when its latest judged window breaches the contract's live
    thresholds or an erasure marked its version, or promote it once it held for
    ``auto_promote_after``; else do nothing."""
    state = read_rollout(settings)
    if state is None:
        return None
    erasures = marked_versions(warehouse).get(state.version)
    if erasures:  # an erasure marked it while it ran: it ends, never promoted by the clock
        reason = f"trained on rows of an erased user (erasure {erasures[-1]})"
        return end_rollout(warehouse, settings, RolloutOutcome.ABORTED, actor=actor, reason=reason)
    contract = load_contract(settings)
    judged = [w for w in rollout_windows(warehouse, state.rollout_id, settings.serving.window_s)
              if int(w["requests"]) >= contract.live.min_requests]  # fmt: skip
    if not judged:
        return None
    missed = breaches(judged[-1], contract.live, contract.serving.max_p95_latency_ms)
    if missed:
        return end_rollout(warehouse, settings, RolloutOutcome.ROLLED_BACK, actor=actor,
                           reason="; ".join(missed))  # fmt: skip
    held = (datetime.now(UTC) - state.started).total_seconds()
    if state.auto_promote_after_s is not None and held >= state.auto_promote_after_s:
        return end_rollout(warehouse, settings, RolloutOutcome.PROMOTED, actor=actor,
                           reason=f"{state.mode} held its live thresholds for {held:.0f} s "
                                  f"over {len(judged)} judged windows")  # fmt: skip
    return None


def rollout_status(warehouse: Warehouse, settings: Settings) -> dict[str, Any]:
    """The running rollout (if any), its windows, and the last rollouts' outcomes."""
    state = read_rollout(settings)
    recent = warehouse.query_dicts(
        "SELECT rollout_id, version, champion, mode, percent, started_at, ended_at, outcome,"
        " end_reason FROM rollouts ORDER BY started_at DESC LIMIT 10"
    )
    windows = (rollout_windows(warehouse, state.rollout_id, settings.serving.window_s)
               if state else [])  # fmt: skip
    return {"running": asdict(state) if state else None, "windows": windows, "recent": recent}
