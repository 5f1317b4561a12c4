"""Escalated predictions Kafka could not give back yet: parked, retried, never silently lost.

When an escalation arrives for a prediction that was audited but not captured, the sink
re-reads the prediction from Kafka. A broker hiccup must not lose the human label, so a read
that returns nothing parks the prediction's position here; the worker retries parked rows
with exponential backoff (``_FIRST_RETRY_S`` doubling up to ``_MAX_RETRY_S``) until the read
succeeds, or until ``retention_hours`` after parking — by then the topic's retention has
certainly dropped the record — when the row is marked ``expired`` and counted. Rows hold
positions and ids only: no text, no user id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

PARKED = "parked"
EXPIRED = "expired"
_FIRST_RETRY_S = 2.0
_MAX_RETRY_S = 300.0


@dataclass(frozen=True)
class Parked:
    prediction_event_id: str
    request_id: str
    partition: int
    offset: int
    parked_at: datetime
    attempts: int


def park(
    con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, int, int]], now: datetime
) -> int:
    """Park ``(prediction_event_id, request_id, partition, offset)`` rows; return the new."""
    before = count(con)
    for event_id, request_id, partition, offset in rows:
        con.execute(
            "INSERT INTO parked_escalations (prediction_event_id, request_id, kafka_partition,"
            " kafka_offset, parked_at, attempts, next_retry_at, status)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING",
            [event_id, request_id, partition, offset, now,
             now + timedelta(seconds=_FIRST_RETRY_S), PARKED],
        )  # fmt: skip
    return count(con) - before


def due(con: duckdb.DuckDBPyConnection, now: datetime, limit: int = 500) -> list[Parked]:
    rows = con.execute(
        "SELECT prediction_event_id, request_id, kafka_partition, kafka_offset, parked_at, attempts"
        " FROM parked_escalations WHERE status = ? AND next_retry_at <= ?"
        " ORDER BY next_retry_at LIMIT ?",
        [PARKED, now, limit],
    ).fetchall()
    return [Parked(str(e), str(r), int(p), int(o), t, int(a)) for e, r, p, o, t, a in rows]


def settle(
    con: duckdb.DuckDBPyConnection,
    *,
    read: list[str],
    unread: list[Parked],
    now: datetime,
    retention_hours: float,
) -> int:
    """Forget the rows that were read; back off or expire the others. Returns how many expired."""
    con.execute(
        "DELETE FROM parked_escalations WHERE prediction_event_id IN (SELECT unnest(?::VARCHAR[]))",
        [read],
    )
    expired = 0
    for row in unread:
        if now >= row.parked_at + timedelta(hours=retention_hours):
            con.execute(
                "UPDATE parked_escalations SET status = ?, attempts = attempts + 1"
                " WHERE prediction_event_id = ?",
                [EXPIRED, row.prediction_event_id],
            )
            expired += 1
            continue
        wait = min(_MAX_RETRY_S, _FIRST_RETRY_S * 2 ** (row.attempts + 1))
        con.execute(
            "UPDATE parked_escalations SET attempts = attempts + 1, next_retry_at = ?"
            " WHERE prediction_event_id = ?",
            [now + timedelta(seconds=wait), row.prediction_event_id],
        )
    return expired


def next_due(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When the earliest parked row is due again; None when nothing is parked."""
    row = con.execute(
        "SELECT min(next_retry_at) FROM parked_escalations WHERE status = ?", [PARKED]
    ).fetchone()
    return row[0] if row else None


def count(con: duckdb.DuckDBPyConnection, status: str = PARKED) -> int:
    row = con.execute(
        "SELECT count(*) FROM parked_escalations WHERE status = ?", [status]
    ).fetchone()
    return int(row[0]) if row else 0
