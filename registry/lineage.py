"""Lineage for compliance: which data, which consent and which model produced what.

Built on the views ``lineage_predictions``, ``lineage_user_data`` and ``lineage_models``
(migration 6), which compliance can also query directly in the DuckDB file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.warehouse import Warehouse


class LineageNotFoundError(TutorloopError):
    """Nothing is recorded for that id."""


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _json(v) for k, v in row.items()}


def model_lineage(warehouse: Warehouse, version: str) -> dict[str, Any]:
    """Full provenance of a model version: run, dataset, sources, privacy, gates, promotions."""
    rows = warehouse.query_dicts("SELECT * FROM lineage_models WHERE version = ?", [version])
    if not rows:
        raise LineageNotFoundError(f"unknown model version {version!r}")
    model = _clean(rows[0])
    run = warehouse.query_dicts(
        "SELECT config, package_versions, hardware, metrics, error FROM training_runs"
        " WHERE run_id = ?",
        [model["run_id"]],
    )
    model["run"] = _clean(run[0]) if run else None
    if model["run"] and isinstance(model["run"].get("metrics"), dict):
        model["run"]["metrics"].pop("history", None)
    dataset = model["dataset_hash"]
    model["dataset_sources"] = warehouse.query_dicts(
        "SELECT split, label_source, count(*) AS rows FROM dataset_members"
        " WHERE dataset_hash = ? GROUP BY split, label_source ORDER BY split, label_source",
        [dataset],
    )
    model["teachers"] = warehouse.query_dicts(
        "SELECT l.teacher_id, l.teacher_version, count(*) AS labels FROM dataset_members m"
        " JOIN labels l ON l.case_id = m.case_id AND l.source = 'teacher'"
        " WHERE m.dataset_hash = ? GROUP BY l.teacher_id, l.teacher_version"
        " ORDER BY l.teacher_id, l.teacher_version",
        [dataset],
    )
    model["consent"] = warehouse.query_dicts(
        "SELECT c.consent_training, count(*) AS cases FROM dataset_members m"
        " JOIN cases c USING (case_id) WHERE m.dataset_hash = ? GROUP BY c.consent_training",
        [dataset],
    )
    model["gates"] = warehouse.query_dicts(
        "SELECT gate, value, n, ci_lower, ci_upper, threshold, comparator, verdict, passed,"
        " clause, detail, contract_hash, eval_hash FROM gate_results"
        " WHERE version = ? ORDER BY gate",
        [version],
    )
    model["promotions"] = warehouse.query_dicts(
        "SELECT ts, action, from_version, to_version, actor, reason, forced, contract_hash"
        " FROM promotions"
        " WHERE to_version = ? OR from_version = ? ORDER BY ts",
        [version, version],
    )
    # Erasures of users whose data trained it: retrain without them (the erasure record's
    # model_versions).
    model["retrain_required"] = [
        {"erasure_id": erasure_id, "ts": ts}
        for erasure_id, ts, versions in warehouse.query(
            "SELECT erasure_id, ts, model_versions FROM erasures ORDER BY ts"
        )
        if version in json.loads(versions or "[]")
    ]
    card = warehouse.query("SELECT card FROM model_versions WHERE version = ?", [version])
    model["warm_start_from"] = json.loads(card[0][0]).get("warm_start_from") if card else None
    return model


def prediction_lineage(warehouse: Warehouse, event_id: str) -> dict[str, Any]:
    """A prediction → its model version → training run → dataset, and its policy checks."""
    rows = warehouse.query_dicts("SELECT * FROM lineage_predictions WHERE event_id = ?", [event_id])
    if not rows:
        raise LineageNotFoundError(f"no prediction {event_id!r} in the audit table")
    prediction = _clean(rows[0])
    case = warehouse.query_dicts(
        "SELECT case_id, capture_reason, consent_training, scrub_findings, scrub_policy_version"
        " FROM cases WHERE prediction_event_id = ?",
        [event_id],
    )
    prediction["case"] = _clean(case[0]) if case else None
    prediction["escalations"] = warehouse.query_dicts(
        "SELECT event_id, ts, reason, human_label IS NOT NULL AS has_human_label"
        " FROM escalations WHERE request_id = ? AND tenant_id = ? AND user_id = ?",
        [prediction["request_id"], prediction["tenant_id"], prediction["user_id"]],
    )
    version = prediction["model_version"]
    known = warehouse.query("SELECT 1 FROM model_versions WHERE version = ?", [version])
    prediction["model"] = model_lineage(warehouse, version) if known else None
    return prediction


def user_lineage(warehouse: Warehouse, user_id: str) -> dict[str, Any]:
    """A user's cases, the datasets that used them, the models trained on those, erasures."""
    cases = warehouse.query_dicts(
        "SELECT case_id, ts, capture_reason, consent_training FROM cases WHERE user_id = ?"
        " ORDER BY ts",
        [user_id],
    )
    usage = warehouse.query_dicts(
        "SELECT dataset_hash, split, count(*) AS cases, array_agg(DISTINCT model_version)"
        " FILTER (WHERE model_version IS NOT NULL) AS models FROM lineage_user_data"
        " WHERE user_id = ? AND dataset_hash IS NOT NULL GROUP BY dataset_hash, split"
        " ORDER BY dataset_hash, split",
        [user_id],
    )
    predictions = warehouse.query(
        "SELECT count(*), count(*) FILTER (WHERE captured) FROM predictions_audit"
        " WHERE user_id = ?",
        [user_id],
    )
    # Erasure records name the subject by hash, never the id.
    subject = subject_hash(user_id)
    erasures = warehouse.query_dicts(
        "SELECT erasure_id, ts, tenant_id, actor, cases_deleted, labels_deleted, model_versions"
        " FROM erasures WHERE user_id = ? ORDER BY ts",
        [subject],
    )
    versions: dict[str, tuple[str, Any, Path]] = {}
    if erasures:
        versions = {
            str(v): (str(status), json.loads(card or "{}"), Path(str(folder)))
            for v, status, card, folder in warehouse.query(
                "SELECT version, status, card, artifact_dir FROM model_versions"
            )
        }
    for erasure in erasures:
        erasure["models"] = _erased_models(warehouse, erasure, versions)
    if not cases and not predictions[0][0] and not erasures:
        raise LineageNotFoundError(f"nothing recorded for user {user_id!r}")
    return {
        "user_id": user_id,
        "predictions": int(predictions[0][0]),
        "captured": int(predictions[0][1]),
        "cases": cases,
        "datasets": usage,
        "models": sorted({m for row in usage for m in (row["models"] or [])}),
        "erasures": erasures,
    }


def _erased_models(
    warehouse: Warehouse, erasure: dict[str, Any], versions: dict[str, tuple[str, Any, Path]]
) -> dict[str, Any]:
    """What an erasure did to the models: the versions it marks (their status, whether their
    row-derived files were rebuilt) and the versions trained since, with what they were
    warm-started from (never a marked version)."""
    marked = json.loads(erasure.pop("model_versions") or "[]")
    rebuilt = []
    for version in marked:
        card_file = versions[version][2] / "card.json" if version in versions else None
        served = json.loads(card_file.read_text()) if card_file and card_file.is_file() else {}
        if erasure["erasure_id"] in served.get("erasures_refitted", []):
            rebuilt.append(version)
    since = warehouse.query(
        "SELECT version FROM model_versions WHERE created_at > ? ORDER BY created_at",
        [erasure["ts"]],
    )
    return {
        "marked": [{"version": v, "status": versions.get(v, ("gone",))[0]} for v in marked],
        "rebuilt_without_the_user": rebuilt,
        "rollback_needs_force": marked,
        "trained_since": [
            {"version": str(v), "warm_start_from": versions[str(v)][1].get("warm_start_from")}
            for (v,) in since
        ],
    }
