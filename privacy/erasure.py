"""Erasure (right to be forgotten) and retention.

``forget`` removes everything a user (a user id within a tenant, or that id in every tenant)
contributed as content — their cases (scrubbed text), the labels and review items on those
cases, the escalations of their predictions (captured or not), the teacher's cached answers
and rationales for their texts — and writes an ``erasures`` record. Dataset
snapshots that held the user are rewritten without them as successor versions and the old
folders replaced by tombstones (:mod:`tutorloop.privacy.snapshot_erasure`); the model versions
trained on them are listed so they can be retrained without the user. Kafka's copy expires
with the topics' retention; the record states when. Lineage rows that hold no content (audit rows,
dataset membership by case id) stay, so compliance can still answer what happened; the audit
rows name the erasure (:func:`tutorloop.privacy.tombstone.pseudonym`) from then on, not the id.

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
from tutorloop.infra.tables import DEFAULT_TENANT
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.snapshot_erasure import RewrittenSnapshot, rewrite_snapshot, tombstone
from tutorloop.privacy.tombstone import pseudonym

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
    tenant_id: str | None  # None: the user id in every tenant
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
    other_tenants: list[str] | None = None  # where the same user id still has cases

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


def _datasets_holding(con: duckdb.DuckDBPyConnection, case_ids: list[str]) -> set[str]:
    return set(
        _ids(
            con,
            "SELECT DISTINCT dataset_hash FROM dataset_members"
            " WHERE case_id IN (SELECT unnest(?::VARCHAR[]))",
            [case_ids],
        )
    )


def _datasets_of(
    con: duckdb.DuckDBPyConnection, case_ids: list[str], subject: str, tenant_id: str | None
) -> set[str]:
    """Dataset versions holding the cases, and those earlier erasures of the subject in an
    overlapping tenant scope named: a rerun finds no cases left."""
    datasets = _datasets_holding(con, case_ids)
    scope, params = (
        ("", [])
        if tenant_id is None
        else (" AND (tenant_id IS NULL OR tenant_id = ?)", [tenant_id])
    )
    for (listed,) in con.execute(
        f"SELECT dataset_versions FROM erasures WHERE user_id = ?{scope}", [subject, *params]
    ).fetchall():
        datasets.update(json.loads(listed))
    return datasets


@dataclass(frozen=True)
class _Subject:
    """Whom an erasure is about: one user id in one tenant, or in every tenant (``None``)."""

    user_id: str
    tenant_id: str | None

    def where(self, alias: str = "") -> tuple[str, list[str]]:
        """SQL condition (and its parameters) on a table's ``user_id`` and ``tenant_id``."""
        at = f"{alias}." if alias else ""
        if self.tenant_id is None:
            return f"{at}user_id = ?", [self.user_id]
        return f"{at}user_id = ? AND {at}tenant_id = ?", [self.user_id, self.tenant_id]


def _with_descendants(con: duckdb.DuckDBPyConnection, versions: list[str]) -> list[str]:
    """``versions`` and every version warm-started from one of them, at any remove: their
    weights descend from the same rows."""
    parent_of = {
        str(version): json.loads(card or "{}").get("warm_start_from")
        for version, card in con.execute("SELECT version, card FROM model_versions").fetchall()
    }
    found = set(versions)
    while True:
        more = {v for v, parent in parent_of.items() if parent in found and v not in found}
        if not more:
            return sorted(found)
        found |= more


def _user_cases(con: duckdb.DuckDBPyConnection, subject: _Subject, *, lock: bool) -> list[str]:
    """The subject's case ids; with ``lock``, locked FOR UPDATE on PostgreSQL: a relabel that
    share-locked them commits first, so the deletes that follow see its rows. DuckDB has one
    writing process at a time."""
    where, params = subject.where()
    suffix = row_lock(con, "FOR UPDATE") if lock else ""
    return _ids(con, f"SELECT case_id FROM cases WHERE {where}{suffix}", params)


def _delete_content(
    con: duckdb.DuckDBPyConnection, subject: _Subject, case_ids: list[str], erasure_id: str
) -> dict[str, int]:
    """Delete what hangs off the subject's cases, then the cases; pseudonymize their audit
    rows. Returns the rows deleted per table."""
    in_cases = "SELECT unnest(?::VARCHAR[])"
    deleted = {
        "teacher_cache": _count(
            con,
            "DELETE FROM teacher_cache WHERE text_hash IN (SELECT text_hash FROM cases"
            f" WHERE case_id IN ({in_cases}))",
            [case_ids],
        )
    }
    con.execute(f"DELETE FROM teacher_errors WHERE case_id IN ({in_cases})", [case_ids])
    # Synthetic cases inherit their source's user: they are among ``case_ids``.
    con.execute(f"DELETE FROM synthetic_cases WHERE case_id IN ({in_cases})", [case_ids])
    for table in ("labels", "review_queue"):
        deleted[table] = _count(
            con, f"DELETE FROM {table} WHERE case_id IN ({in_cases})", [case_ids]
        )
    # Escalations of the subject's predictions, also those never captured as a case (no
    # consent, or over a cap): their reason and human label are the user's content too. An
    # escalation names its owner; one without (its prediction never arrived, or several users
    # sent its request id) is the subject's only if no other user's prediction shares the id.
    owned, owned_params = subject.where()
    mine, params = subject.where("a")
    others, other_params = subject.where("b")
    deleted["escalations"] = _count(
        con,
        f"DELETE FROM escalations WHERE case_id IN ({in_cases}) OR ({owned}) OR (user_id IS NULL"
        f" AND request_id IN (SELECT a.request_id FROM predictions_audit a WHERE {mine}) AND NOT"
        " EXISTS (SELECT 1 FROM predictions_audit b WHERE b.request_id = escalations.request_id"
        f" AND NOT ({others})))",
        [case_ids, *owned_params, *params, *other_params],
    )
    deleted["cases"] = _count(con, f"DELETE FROM cases WHERE case_id IN ({in_cases})", [case_ids])
    # Audit rows hold no content but named the user: they name the erasure from now on, which
    # the capture sink's tombstone check still recognizes (a late escalation stays dropped).
    where, params = subject.where()
    con.execute(
        f"UPDATE predictions_audit SET user_id = ? WHERE {where}", [pseudonym(erasure_id), *params]
    )
    return deleted


def forget(
    warehouse: Warehouse,
    user_id: str,
    *,
    actor: str,
    tenant_id: str | None = DEFAULT_TENANT,
    broker_retention_hours: float | None = None,
) -> ErasureReport:
    """Erase one user's content in one tenant (``tenant_id``; ``None``: that user id in every
    tenant); return what was deleted and what must be retrained.

    Kafka is append-only: the user's raw events stay on the broker until its retention
    deletes them. With ``broker_retention_hours`` (``streams.retention_hours``, the
    ``retention.ms`` of the topics tutorloop creates) the record states when that is.
    """
    now = datetime.now(UTC)
    expires = now + timedelta(hours=broker_retention_hours) if broker_retention_hours else None
    who = _Subject(user_id, tenant_id)
    subject = subject_hash(user_id)
    erasure_id = str(uuid.uuid4())
    # Snapshot files are rewritten before the write transaction, so that workers and on-call
    # are not kept waiting for file copies; a dataset built in between is rewritten inside.
    with warehouse.connect() as con:
        first_cases = _user_cases(con, who, lock=False)
        first_datasets = _datasets_of(con, first_cases, subject, tenant_id)
        staged = _rewrite(_snapshots(con, first_datasets), set(first_cases))
    with warehouse.transaction() as con:
        case_ids = _user_cases(con, who, lock=True)
        datasets = _datasets_of(con, case_ids, subject, tenant_id)
        staged += _rewrite(_snapshots(con, datasets - first_datasets), set(case_ids))
        successors = _record_successors(con, staged, set(case_ids), erasure_id)
        trained = _ids(
            con,
            "SELECT mv.version FROM model_versions mv JOIN training_runs tr USING (run_id) "
            "WHERE tr.dataset_hash IN (SELECT unnest(?::VARCHAR[]))",
            [sorted(datasets)],
        )
        models = _with_descendants(con, trained)
        deleted = _delete_content(con, who, case_ids, erasure_id)
        others = _ids(con, "SELECT DISTINCT tenant_id FROM cases WHERE user_id = ?", [user_id])
        con.execute(
            "INSERT INTO erasures (erasure_id, ts, user_id, tenant_id, actor, cases_deleted, "
            "labels_deleted, dataset_versions, model_versions, broker_expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                erasure_id,
                now,
                subject,
                tenant_id,
                actor,
                deleted["cases"],
                deleted["labels"],
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
        tenant_id=tenant_id,
        cases_deleted=deleted["cases"],
        labels_deleted=deleted["labels"],
        escalations_deleted=deleted["escalations"],
        review_items_deleted=deleted["review_queue"],
        dataset_versions=sorted(datasets),
        model_versions=models,
        file_bytes_before=before,
        file_bytes_after=after,
        broker_copy_expires_at=expires.isoformat() if expires else None,
        dataset_successors={old: new for old, _, new in successors},
        teacher_cache_deleted=deleted["teacher_cache"],
        other_tenants=others,
    )


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str
    dry_run: bool
    deleted: dict[str, int]
    dataset_successors: dict[str, str] | None = None  # old snapshot -> rewritten without them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_OLD_CASES = "SELECT case_id FROM cases WHERE captured_at < ?"
# Every ? is the cutoff (positional: PostgreSQL takes no named parameters). Children first:
# labels, review items and teacher errors hang off cases. A cached teacher answer (and
# rationale) is kept while a case stored since the cutoff still has its text.
_PURGE = (
    ("labels", f"case_id IN ({_OLD_CASES})"),
    ("review_queue", f"case_id IN ({_OLD_CASES})"),
    ("teacher_errors", f"ts < ? OR case_id IN ({_OLD_CASES})"),
    (
        "teacher_cache",
        "created_at < ? AND text_hash NOT IN (SELECT text_hash FROM cases WHERE captured_at >= ?)",
    ),
    # Synthetic cases carry their source's captured_at: they go with it.
    ("synthetic_cases", f"case_id IN ({_OLD_CASES})"),
    ("cases", "captured_at < ?"),
    ("escalations", "ingested_at < ?"),
    ("predictions_audit", "ingested_at < ?"),
)


def purge(warehouse: Warehouse, older_than: timedelta, *, dry_run: bool = False) -> PurgeReport:
    """Delete content and audit rows stored more than ``older_than`` ago; dataset snapshots
    that held purged cases are rewritten without them, as ``forget`` does."""
    cutoff = datetime.now(UTC) - older_than
    purge_id = f"purge-{uuid.uuid4()}"
    with warehouse.connect() as con:
        old = _ids(con, _OLD_CASES, [cutoff])
        datasets = _datasets_holding(con, old)
        staged = [] if dry_run else _rewrite(_snapshots(con, datasets), set(old))
    deleted: dict[str, int] = {}
    with warehouse.transaction() as con:
        successors = _record_successors(con, staged, set(old), purge_id)
        deleted["dataset_snapshots"] = len(datasets) if dry_run else len(successors)
        for table, where in _PURGE:
            verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
            sql = f"{verb} {table} WHERE {where}"
            deleted[table] = _count(con, sql, [cutoff] * sql.count("?"))
    for rewritten in successors:
        tombstone(Path(rewritten[1]), erasure_id=purge_id, successor=rewritten[2])
    if not dry_run and any(deleted.values()):
        warehouse.compact()
    return PurgeReport(
        cutoff=cutoff.isoformat(),
        dry_run=dry_run,
        deleted=deleted,
        dataset_successors={old_hash: new for old_hash, _, new in successors},
    )
