"""A summary of what the stream workers stored, read from the warehouse."""

from __future__ import annotations

from typing import Any

from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.case_store import labeling_counts

# The order `tutorloop streams stats` prints them in: the path of an event.
_ORDER = (
    "predictions_audited",
    "predictions_without_consent",
    "capture_decisions",
    "cases",
    "cases_by_reason",
    "escalations",
    "escalations_waiting_for_prediction",
    "escalated_predictions_parked",
    "escalated_predictions_expired",
    "human_labels",
    "audited_last_5_min",
    "last_ingested_at",
)


def audited_count(warehouse: Warehouse) -> int:
    """Predictions the workers have stored (one audit row each)."""
    return int(warehouse.query("SELECT count(*) FROM predictions_audit")[0][0])


def warehouse_stats(warehouse: Warehouse) -> dict[str, Any]:
    with warehouse.connect() as con:

        def one(sql: str) -> Any:
            row = con.execute(sql).fetchone()
            return row[0] if row else None

        def by(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in con.execute(sql).fetchall()}

        stats = {
            "predictions_audited": int(one("SELECT count(*) FROM predictions_audit")),
            "predictions_without_consent": int(
                one("SELECT count(*) FROM predictions_audit WHERE NOT consent_training")
            ),
            "capture_decisions": by(
                "SELECT coalesce(capture_reason, 'not_captured'), count(*) "
                "FROM predictions_audit GROUP BY 1 ORDER BY 1"
            ),
            "escalations": int(one("SELECT count(*) FROM escalations")),
            "escalations_waiting_for_prediction": int(
                one("SELECT count(*) FROM escalations WHERE case_id IS NULL")
            ),
            "escalated_predictions_parked": int(
                one("SELECT count(*) FROM parked_escalations WHERE status = 'parked'")
            ),
            "escalated_predictions_expired": int(
                one("SELECT count(*) FROM parked_escalations WHERE status = 'expired'")
            ),
            "audited_last_5_min": int(
                one(
                    "SELECT count(*) FROM predictions_audit "
                    "WHERE ingested_at > now() - INTERVAL 5 MINUTE"
                )
            ),
            "last_ingested_at": one("SELECT max(ingested_at) FROM predictions_audit"),
        }
    merged = {**stats, **labeling_counts(warehouse)}
    return {key: merged[key] for key in _ORDER}
