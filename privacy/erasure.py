"""Erasure (right to be forgotten) and retention.

``forget`` removes everything a user contributed as content — their cases (scrubbed text),
the labels and review items on those cases, and the escalations attached to them — and writes
an ``erasures`` record. It lists the dataset versions and model versions that contained the
user so they can be retrained without them. Lineage rows that hold no content (audit rows,
dataset membership by case id) stay, so compliance can still answer what happened.

The erasure record identifies the subject by a SHA-256 of the user id, not the id itself: the
record proves the erasure without keeping the identifier around. Deleted rows linger in the
DuckDB file's free blocks, so both operations end by compacting the file
(:meth:`infra.warehouse.Warehouse.compact`); after that the text is gone from disk.

``purge`` is retention: content and audit rows older than a cutoff are deleted.
Both are safe to rerun.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.warehouse import Warehouse

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RetentionError(TutorloopError):
    exit_code = 2


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` → a timedelta."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise RetentionError(
            f"invalid duration {text!r}: expected a positive number and a unit s/m/h/d/w, e.g. 90d"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class ErasureReport:
    erasure_id: str
    subject: str
    cases_deleted: int
    labels_deleted: int
    escalations_deleted: int
    review_items_deleted: int
    dataset_versions: list[str]
    model_versions: list[str]
    file_bytes_before: int
    file_bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ids(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[str]:
    return sorted({str(r[0]) for r in con.execute(sql, params).fetchall()})


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def forget(warehouse: Warehouse, user_id: str, *, actor: str) -> ErasureReport:
    """Erase one user's content; return what was deleted and what must be retrained."""
    subject = subject_hash(user_id)
    in_cases = "SELECT unnest(?::VARCHAR[])"
    with warehouse.transaction() as con:
        case_ids = _ids(con, "SELECT case_id FROM cases WHERE user_id = ?", [user_id])
        datasets = set(
            _ids(
                con,
                f"SELECT DISTINCT dataset_hash FROM dataset_members WHERE case_id IN ({in_cases})",
                [case_ids],
            )
        )
        # A rerun finds no cases left; earlier erasure records of this subject still say
        # which datasets contained the user.
        for (listed,) in con.execute(
            "SELECT dataset_versions FROM erasures WHERE user_id = ?", [subject]
        ).fetchall():
            datasets.update(json.loads(listed))
        models = _ids(
            con,
            "SELECT mv.version FROM model_versions mv JOIN training_runs tr USING (run_id) "
            f"WHERE tr.dataset_hash IN ({in_cases})",
            [sorted(datasets)],
        )
        labels = _count(con, f"DELETE FROM labels WHERE case_id IN ({in_cases})", [case_ids])
        review = _count(con, f"DELETE FROM review_queue WHERE case_id IN ({in_cases})", [case_ids])
        escalations = _count(
            con, f"DELETE FROM escalations WHERE case_id IN ({in_cases})", [case_ids]
        )
        cases = _count(con, f"DELETE FROM cases WHERE case_id IN ({in_cases})", [case_ids])
        erasure_id = str(uuid.uuid4())
        con.execute(
            "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, "
            "labels_deleted, dataset_versions, model_versions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                erasure_id,
                datetime.now(UTC),
                subject,
                actor,
                cases,
                labels,
                json.dumps(sorted(datasets)),
                json.dumps(models),
            ],
        )
    before, after = warehouse.compact()
    return ErasureReport(
        erasure_id=erasure_id,
        subject=subject,
        cases_deleted=cases,
        labels_deleted=labels,
        escalations_deleted=escalations,
        review_items_deleted=review,
        dataset_versions=sorted(datasets),
        model_versions=models,
        file_bytes_before=before,
        file_bytes_after=after,
    )


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str
    dry_run: bool
    deleted: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Children first: labels and review items hang off cases.
_PURGE = (
    ("labels", "case_id IN (SELECT case_id FROM cases WHERE captured_at < $cutoff)"),
    ("review_queue", "case_id IN (SELECT case_id FROM cases WHERE captured_at < $cutoff)"),
    ("cases", "captured_at < $cutoff"),
    ("escalations", "ingested_at < $cutoff"),
    ("predictions_audit", "ingested_at < $cutoff"),
)


def purge(warehouse: Warehouse, older_than: timedelta, *, dry_run: bool = False) -> PurgeReport:
    """Delete content and audit rows stored more than ``older_than`` ago."""
    cutoff = datetime.now(UTC) - older_than
    deleted: dict[str, int] = {}
    with warehouse.transaction() as con:
        for table, where in _PURGE:
            verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
            deleted[table] = _count(con, f"{verb} {table} WHERE {where}", {"cutoff": cutoff})
    if not dry_run and any(deleted.values()):
        warehouse.compact()
    return PurgeReport(cutoff=cutoff.isoformat(), dry_run=dry_run, deleted=deleted)
