"""Erasure (right to be forgotten) and retention.

``forget`` removes everything a user contributed as content — their cases (scrubbed text),
the labels and review items on those cases, the escalations attached to them, the teacher's
cached answers and rationales for their texts — and writes an ``erasures`` record. Dataset
snapshots that held the user are rewritten without them as successor versions and the old
folders replaced by tombstones (:mod:`tutorloop.privacy.snapshot_erasure`); the model versions
trained on them are listed so they can be retrained without the user. Kafka's copy expires
with the topics' retention; the record states when. Lineage rows that hold no content (audit rows,
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
from pathlib import Path
from typing import Any

import duckdb

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.sql_dialect import row_lock
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.snapshot_erasure import RewrittenSnapshot, rewrite_snapshot, tombstone

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
    broker_copy_expires_at: str | None = None  # when Kafka's retention drops the raw events
    dataset_successors: dict[str, str] | None = None  # old snapshot -> rewritten without them
    teacher_cache_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ids(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[str]:
    return sorted({str(r[0]) for r in con.execute(sql, params).fetchall()})


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


_Snapshot = tuple[str, str, str, str]  # dataset hash, folder, spec, counts
_Staged = tuple[_Snapshot, RewrittenSnapshot]


def _snapshots(con: duckdb.DuckDBPyConnection, datasets: set[str]) -> list[_Snapshot]:
    rows = con.execute(
        "SELECT dataset_hash, path, spec, counts FROM dataset_versions"
        " WHERE dataset_hash IN (SELECT unnest(?::VARCHAR[]))",
        [sorted(datasets)],
    ).fetchall()
    return [(str(h), str(p), str(spec), str(counts)) for h, p, spec, counts in rows]


def _rewrite(snapshots: list[_Snapshot], case_ids: set[str]) -> list[_Staged]:
    """Successor snapshot files without the user's rows (files only: no warehouse lock)."""
    staged = []
    for snapshot in snapshots:
        rewritten = rewrite_snapshot(snapshot[0], Path(snapshot[1]), case_ids)
        if rewritten is not None:
            staged.append((snapshot, rewritten))
    return staged


def _record_successors(
    con: duckdb.DuckDBPyConnection, staged: list[_Staged], case_ids: set[str], erasure_id: str
) -> list[tuple[str, str, str]]:
    """The successors' warehouse rows; (old hash, old folder, new hash) to tombstone later."""
    out = []
    for (old_hash, path, spec, counts), rewritten in staged:
        new_counts = {**json.loads(counts), "by_split": rewritten.counts,
                      "derived_from": old_hash, "erasure_id": erasure_id}  # fmt: skip
        con.execute(
            "INSERT INTO dataset_versions (dataset_hash, spec, counts, n_train, n_validation,"
            " n_eval, path) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [rewritten.new_hash, spec, json.dumps(new_counts, sort_keys=True),
             rewritten.counts.get("train", 0), rewritten.counts.get("validation", 0),
             rewritten.counts.get("eval", 0), str(rewritten.path)],
        )  # fmt: skip
        con.execute(
            "INSERT INTO dataset_members SELECT ?, case_id, split, label, label_source"
            " FROM dataset_members WHERE dataset_hash = ?"
            " AND case_id NOT IN (SELECT unnest(?::VARCHAR[]))"
            " AND NOT EXISTS (SELECT 1 FROM dataset_members d WHERE d.dataset_hash = ?)",
            [rewritten.new_hash, old_hash, sorted(case_ids), rewritten.new_hash],
        )
        out.append((old_hash, path, rewritten.new_hash))
    return out


def _datasets_of(con: duckdb.DuckDBPyConnection, case_ids: list[str], subject: str) -> set[str]:
    """Dataset versions holding the cases, and those earlier erasures of the subject named (a
    rerun finds no cases left)."""
    datasets = set(
        _ids(
            con,
            "SELECT DISTINCT dataset_hash FROM dataset_members"
            " WHERE case_id IN (SELECT unnest(?::VARCHAR[]))",
            [case_ids],
        )
    )
    for (listed,) in con.execute(
        "SELECT dataset_versions FROM erasures WHERE user_id = ?", [subject]
    ).fetchall():
        datasets.update(json.loads(listed))
    return datasets


def _locked_cases(con: duckdb.DuckDBPyConnection, user_id: str) -> list[str]:
    """The user's case ids, locked FOR UPDATE on PostgreSQL: a relabel that share-locked them
    commits first, so the deletes that follow see its rows. DuckDB has one writing process
    at a time."""
    lock = row_lock(con, "FOR UPDATE")
    return _ids(con, f"SELECT case_id FROM cases WHERE user_id = ?{lock}", [user_id])


def forget(
    warehouse: Warehouse, user_id: str, *, actor: str, broker_retention_hours: float | None = None
) -> ErasureReport:
    """Erase one user's content; return what was deleted and what must be retrained.

    Kafka is append-only: the user's raw events stay on the broker until its retention
    deletes them. With ``broker_retention_hours`` (``streams.retention_hours``, the
    ``retention.ms`` of the topics tutorloop creates) the record states when that is.
    """
    now = datetime.now(UTC)
    expires = now + timedelta(hours=broker_retention_hours) if broker_retention_hours else None
    subject = subject_hash(user_id)
    in_cases = "SELECT unnest(?::VARCHAR[])"
    erasure_id = str(uuid.uuid4())
    # Snapshot files are rewritten before the write transaction, so that workers and on-call
    # are not kept waiting for file copies; a dataset built in between is rewritten inside.
    with warehouse.connect() as con:
        first_cases = _ids(con, "SELECT case_id FROM cases WHERE user_id = ?", [user_id])
        first_datasets = _datasets_of(con, first_cases, subject)
        staged = _rewrite(_snapshots(con, first_datasets), set(first_cases))
    with warehouse.transaction() as con:
        case_ids = _locked_cases(con, user_id)
        datasets = _datasets_of(con, case_ids, subject)
        staged += _rewrite(_snapshots(con, datasets - first_datasets), set(case_ids))
        successors = _record_successors(con, staged, set(case_ids), erasure_id)
        models = _ids(
            con,
            "SELECT mv.version FROM model_versions mv JOIN training_runs tr USING (run_id) "
            f"WHERE tr.dataset_hash IN ({in_cases})",
            [sorted(datasets)],
        )
        cached = _count(
            con,
            "DELETE FROM teacher_cache WHERE text_hash IN (SELECT text_hash FROM cases"
            f" WHERE case_id IN ({in_cases}))",
            [case_ids],
        )
        con.execute(f"DELETE FROM teacher_errors WHERE case_id IN ({in_cases})", [case_ids])
        # Synthetic cases inherit their source's user: they are among ``case_ids``.
        con.execute(f"DELETE FROM synthetic_cases WHERE case_id IN ({in_cases})", [case_ids])
        labels = _count(con, f"DELETE FROM labels WHERE case_id IN ({in_cases})", [case_ids])
        review = _count(con, f"DELETE FROM review_queue WHERE case_id IN ({in_cases})", [case_ids])
        escalations = _count(
            con, f"DELETE FROM escalations WHERE case_id IN ({in_cases})", [case_ids]
        )
        cases = _count(con, f"DELETE FROM cases WHERE case_id IN ({in_cases})", [case_ids])
        con.execute(
            "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, "
            "labels_deleted, dataset_versions, model_versions, broker_expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                erasure_id,
                now,
                subject,
                actor,
                cases,
                labels,
                json.dumps(sorted(datasets)),
                json.dumps(models),
                expires,
            ],
        )
    for rewritten in successors:
        tombstone(Path(rewritten[1]), erasure_id=erasure_id, successor=rewritten[2])
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
        broker_copy_expires_at=expires.isoformat() if expires else None,
        dataset_successors={old: new for old, _, new in successors},
        teacher_cache_deleted=cached,
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
    # Synthetic cases carry their source's captured_at: they go with it.
    ("synthetic_cases", "case_id IN (SELECT case_id FROM cases WHERE captured_at < $cutoff)"),
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
