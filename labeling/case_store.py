"""Writing ``cases`` and ``labels``: the one place rows enter them (erasure aside).

labeling owns both tables. Capture (the stream sink), gold import, relabeling and review all
write through these functions, inside the caller's transaction, so that a batch's cases and
its audit rows still commit together. Every insert is keyed and skips existing keys
(``ON CONFLICT DO NOTHING``): a replayed batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from tutorloop.infra.tables import IMPORTED_REASONS, CaptureReason, LabelSource
from tutorloop.infra.warehouse import Warehouse, insert_arrow

CASE_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("request_id", pa.string()),
        ("prediction_event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("model_version", pa.string()),
        ("text", pa.string()),
        ("text_hash", pa.string()),
        ("predicted_label", pa.string()),
        ("confidence", pa.float64()),
        ("capture_reason", pa.string()),
        ("consent_training", pa.bool_()),
        ("scrub_findings", pa.string()),
        ("scrub_policy_version", pa.string()),
    ]
)


def insert_cases(
    con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]], *, typed: bool = True
) -> int:
    """Insert scrubbed cases (never raw text); return how many were new.

    ``typed`` rows follow :data:`CASE_SCHEMA` exactly (capture's hot path); others are
    converted by Arrow's inference (imports, which fill fewer columns).
    """
    if not rows:
        return 0
    table = pa.Table.from_pylist(list(rows), CASE_SCHEMA if typed else None)
    return insert_arrow(con, "cases", table)


def insert_labels(
    con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]], schema: pa.Schema | None = None
) -> int:
    """Insert label rows; return how many were new."""
    if not rows:
        return 0
    return insert_arrow(con, "labels", pa.Table.from_pylist(list(rows), schema))


def label_escalated_cases(con: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    """Turn the human labels of these requests' escalations into gold label rows.

    The label id names the escalation and the case, so a replayed escalation adds nothing.
    """
    if not request_ids:
        return 0
    row = con.execute(
        "INSERT INTO labels (label_id, case_id, source, label, confidence, actor, created_at) "
        "SELECT 'human:' || e.event_id || ':' || c.case_id, c.case_id, ?, "
        "e.human_label, 1.0, e.actor, e.ts "
        "FROM escalations e JOIN cases c ON c.request_id = e.request_id "
        "AND c.tenant_id = e.tenant_id AND c.user_id = e.user_id "
        "WHERE e.human_label IS NOT NULL "
        "AND e.request_id IN (SELECT unnest(?::VARCHAR[])) ON CONFLICT DO NOTHING",
        [LabelSource.HUMAN, request_ids],
    ).fetchone()
    return int(row[0]) if row else 0


def labeling_counts(warehouse: Warehouse) -> dict[str, Any]:
    """What the case store holds, cumulative: for reports and ``streams stats``.

    ``cases`` and ``cases_by_reason``: every case; ``captured``: cases from production (imports
    and synthetic cases excluded); ``labeled``: cases with any label except the fixed gold
    evaluation set; ``human_labels``: human label rows; ``teacher_calls``: answers in the
    teacher cache (what was paid for).
    """
    with warehouse.connect() as con:

        def one(sql: str, params: list[Any] | None = None) -> int:
            row = con.execute(sql, params or []).fetchone()
            return int(row[0]) if row else 0

        by_reason = con.execute(
            "SELECT capture_reason, count(*) FROM cases GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return {
            "cases": one("SELECT count(*) FROM cases"),
            "cases_by_reason": {str(k): int(v) for k, v in by_reason},
            "captured": one(
                "SELECT count(*) FROM cases WHERE capture_reason NOT IN (SELECT unnest(?))",
                [[*IMPORTED_REASONS, CaptureReason.SYNTHETIC]],
            ),
            "labeled": one(
                "SELECT count(DISTINCT l.case_id) FROM labels l JOIN cases c USING (case_id)"
                " WHERE c.capture_reason <> ?",
                [CaptureReason.GOLD_EVAL],
            ),
            "human_labels": one(
                "SELECT count(*) FROM labels WHERE source = ?", [LabelSource.HUMAN]
            ),
            "teacher_calls": one("SELECT count(*) FROM teacher_cache"),
        }


def labels_added_since(warehouse: Warehouse, since: datetime) -> int:
    """Label rows (any source) created after ``since``: the schedule's new-labels trigger."""
    return int(warehouse.query("SELECT count(*) FROM labels WHERE created_at > ?", [since])[0][0])
