"""The relabel job: give every captured case a teacher label, never paying twice for a text.

Per batch: look answers up in ``teacher_cache`` by (teacher id, text hash); call the teacher
only for texts it has never answered; then, in one warehouse transaction, store the new
answers in the cache, a ``labels`` row per labeled case (with provenance: teacher id and
version, cost, tokens, confidence, rationale), a ``teacher_errors`` row per failure, and the
review items (teacher/human disagreement, confidence below the floor, and a seeded spot-check
sample of ``spot_check`` of the labels drawn whatever their confidence, so that what reviewers
decide on it measures the teacher without bias: :mod:`tutorloop.labeling.agreement`). A rerun
after an interruption skips cases already labeled by this teacher and finds earlier answers in the
cache; at most the calls of the batch in flight when a process was killed are made again.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from tutorloop.infra.hashing import fingerprint, stable_unit
from tutorloop.infra.sql_dialect import row_lock
from tutorloop.infra.tables import IMPORTED_REASONS, CaptureReason, LabelSource, ReviewReason
from tutorloop.infra.warehouse import Warehouse, insert_arrow
from tutorloop.labeling.teacher import Teacher, TeacherAnswer, TeacherFailure, TeacherResult

_STR, _F64, _I64 = pa.string(), pa.float64(), pa.int64()
_CACHE_SCHEMA = pa.schema(
    [("teacher_id", _STR), ("text_hash", _STR), ("teacher_version", _STR), ("label", _STR),
     ("soft_targets", _STR), ("confidence", _F64), ("rationale", _STR), ("cost_usd", _F64),
     ("tokens", _I64)]
)  # fmt: skip
_LABEL_SCHEMA = pa.schema(
    [("label_id", _STR), ("case_id", _STR), ("source", _STR), ("label", _STR),
     ("soft_targets", _STR), ("confidence", _F64), ("teacher_id", _STR),
     ("teacher_version", _STR), ("rationale", _STR), ("cost_usd", _F64), ("tokens", _I64)]
)  # fmt: skip
_ERROR_SCHEMA = pa.schema(
    [("error_id", _STR), ("case_id", _STR), ("teacher_id", _STR), ("kind", _STR),
     ("message", _STR), ("cost_usd", _F64), ("tokens", _I64)]
)  # fmt: skip
_REVIEW_SCHEMA = pa.schema(
    [("item_id", _STR), ("case_id", _STR), ("reason", _STR), ("teacher_label", _STR),
     ("teacher_confidence", _F64), ("human_label", _STR), ("teacher_id", _STR)]
)  # fmt: skip


@dataclass
class RelabelReport:
    teacher_id: str
    pending: int = 0
    labeled: int = 0
    from_cache: int = 0
    calls: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    review_items: int = 0
    spot_checks: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    erased: int = 0  # cases erased while their answers were on the way: nothing stored

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PendingCase:
    """A captured case a teacher has not labeled yet (its text is the scrubbed one)."""

    case_id: str
    text: str
    text_hash: str
    capture_reason: str


def _id(*parts: str) -> str:
    return fingerprint(*parts, length=32)


def pending_cases(warehouse: Warehouse, teacher_id: str) -> list[PendingCase]:
    """Captured cases that have no label from this teacher yet, oldest first.

    Imported gold (seed and evaluation sets) is not sent: it is labeled already, and a
    teacher's opinion of it would be paid for and never used.
    """
    rows = warehouse.query(
        "SELECT case_id, text, text_hash, capture_reason FROM cases c"
        " WHERE capture_reason NOT IN (SELECT unnest(?::VARCHAR[]))"
        " AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = c.case_id"
        " AND l.source = 'teacher' AND l.teacher_id = ?) ORDER BY ts, case_id",
        [list(IMPORTED_REASONS), teacher_id],
    )
    return [PendingCase(*row) for row in rows]


def _cached(
    con: duckdb.DuckDBPyConnection, teacher_id: str, hashes: Sequence[str]
) -> dict[str, TeacherAnswer]:
    if not hashes:
        return {}
    rows = con.execute(
        "SELECT text_hash, label, soft_targets, confidence, rationale FROM teacher_cache "
        "WHERE teacher_id = ? AND text_hash IN (SELECT unnest(?))",
        [teacher_id, list(hashes)],
    ).fetchall()
    return {
        h: TeacherAnswer(label, json.loads(soft), confidence, rationale)
        for h, label, soft, confidence, rationale in rows
    }


def _human_labels(con: duckdb.DuckDBPyConnection, case_ids: Sequence[str]) -> dict[str, str]:
    rows = con.execute(
        "SELECT case_id, arg_max(label, created_at) FROM labels "
        "WHERE source = 'human' AND case_id IN (SELECT unnest(?)) GROUP BY case_id",
        [list(case_ids)],
    ).fetchall()
    return {case_id: label for case_id, label in rows}


def _call(teacher: Teacher, texts: list[str]) -> list[TeacherResult]:
    if not texts:
        return []
    try:
        results = teacher.label_batch(texts)
    except Exception as exc:  # a broken backend must not lose the batch's bookkeeping
        return [TeacherFailure("other", f"teacher failed: {type(exc).__name__}")] * len(texts)
    if len(results) != len(texts):
        return [TeacherFailure("other", "teacher returned the wrong number of answers")] * len(
            texts
        )
    return results


def relabel(
    warehouse: Warehouse,
    teacher: Teacher,
    *,
    batch_size: int = 64,
    review_below: float = 0.5,
    spot_check: float = 0.0,
    limit: int | None = None,
    cases: Sequence[PendingCase] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_pending: Callable[[int], None] | None = None,
) -> RelabelReport:
    """Label every pending case (or the first ``limit``, or ``cases`` that an acquisition
    policy chose among them); see the module docstring."""
    info = teacher.info
    report = RelabelReport(teacher_id=info.teacher_id)
    cases = list(cases) if cases is not None else pending_cases(warehouse, info.teacher_id)
    if limit is not None:
        cases = cases[:limit]
    report.pending = len(cases)
    if on_pending is not None:
        on_pending(len(cases))
    # A paid endpoint is asked in batches no larger than its concurrency: a hard kill then
    # loses at most the answers that were in flight.
    step = min(batch_size, int(getattr(teacher, "preferred_batch", batch_size)))
    failures: Counter[str] = Counter()
    for start in range(0, len(cases), step):
        batch = cases[start : start + step]
        with warehouse.connect() as con:
            cached = _cached(con, info.teacher_id, sorted({c.text_hash for c in batch}))
        unanswered: dict[str, str] = {}
        for case in batch:
            if case.text_hash not in cached:
                unanswered.setdefault(case.text_hash, case.text)
        results = dict(zip(unanswered, _call(teacher, list(unanswered.values())), strict=True))
        report.calls += len(unanswered)
        with warehouse.transaction() as con:
            # An erasure that ran while the teacher answered deleted these cases (and the
            # cache rows of their texts): storing the answers would bring their content back.
            erased = _erased_since(con, batch)
            kept = [case for case in batch if case.case_id not in erased]
            answers = _answers_for(kept, results)
            items, spot_checks = _store(
                con, info.teacher_id, info.version, kept, cached, answers,
                review_below, spot_check,
            )  # fmt: skip
        report.erased += len(erased)
        report.review_items += items
        report.spot_checks += spot_checks
        for case in kept:
            result = cached.get(case.text_hash) or results[case.text_hash]
            if isinstance(result, TeacherAnswer):
                report.labeled += 1
                report.from_cache += case.text_hash in cached
            else:
                report.failed += 1
                failures[result.kind] += 1
        for result in results.values():
            report.cost_usd += result.cost_usd
            report.tokens += result.tokens
        # Texts answered in this batch are cached for later duplicates in the same run.
        for text_hash, result in answers.items():
            if isinstance(result, TeacherAnswer):
                cached[text_hash] = result
        if on_batch is not None:
            on_batch(len(batch))
    report.failures = dict(failures)
    return report


def _erased_since(con: duckdb.DuckDBPyConnection, batch: Sequence[PendingCase]) -> set[str]:
    """The batch's cases that are gone from ``cases`` (``privacy forget`` deleted them).

    On PostgreSQL the survivors are share-locked until this transaction commits: a ``forget``
    that starts meanwhile waits (it locks the user's cases FOR UPDATE), then deletes what this
    transaction stored. DuckDB has one writing process at a time.
    """
    ids = [case.case_id for case in batch]
    lock = row_lock(con, "FOR SHARE")
    alive = {
        str(row[0])
        for row in con.execute(
            f"SELECT case_id FROM cases WHERE case_id IN (SELECT unnest(?::VARCHAR[])){lock}",
            [ids],
        ).fetchall()
    }
    return set(ids) - alive


def _answers_for(
    batch: Sequence[PendingCase], results: dict[str, TeacherResult]
) -> dict[str, TeacherResult]:
    """The answers about texts that some case of ``batch`` still holds."""
    hashes = {case.text_hash for case in batch}
    return {text_hash: r for text_hash, r in results.items() if text_hash in hashes}


def _store(
    con: duckdb.DuckDBPyConnection,
    teacher_id: str,
    teacher_version: str,
    batch: Sequence[PendingCase],
    cached: dict[str, TeacherAnswer],
    results: dict[str, TeacherResult],
    review_below: float,
    spot_check: float,
) -> tuple[int, int]:
    """Store one batch; return (review items added, of which spot checks)."""
    cache_rows = [
        {
            "teacher_id": teacher_id, "text_hash": text_hash, "teacher_version": teacher_version,
            "label": r.label, "soft_targets": json.dumps(r.soft_targets, sort_keys=True),
            "confidence": r.confidence, "rationale": r.rationale, "cost_usd": r.cost_usd,
            "tokens": r.tokens,
        }
        for text_hash, r in results.items()
        if isinstance(r, TeacherAnswer)
    ]  # fmt: skip
    insert_arrow(con, "teacher_cache", pa.Table.from_pylist(cache_rows, _CACHE_SCHEMA))
    humans = _human_labels(con, [c.case_id for c in batch])
    label_rows: list[dict[str, Any]] = []
    error_rows: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    charged: set[str] = set()
    for case in batch:
        new = results.get(case.text_hash)
        result = cached.get(case.text_hash) or new
        assert result is not None
        # The cost of a call is booked on the first case that needed it; duplicates are free.
        pays = new is not None and case.text_hash not in charged
        charged.add(case.text_hash)
        cost = result.cost_usd if pays else 0.0
        tokens = result.tokens if pays else 0
        if isinstance(result, TeacherFailure):
            error_rows.append(failure_row(case.case_id, teacher_id, result, cost, tokens))
            continue
        label_rows.append(
            {
                "label_id": _id("teacher", case.case_id, teacher_id), "case_id": case.case_id,
                "source": LabelSource.TEACHER, "label": result.label,
                "soft_targets": json.dumps(result.soft_targets, sort_keys=True),
                "confidence": result.confidence, "teacher_id": teacher_id,
                "teacher_version": teacher_version, "rationale": result.rationale,
                "cost_usd": cost, "tokens": tokens,
            }
        )  # fmt: skip
        if case.capture_reason == CaptureReason.SYNTHETIC:
            continue  # people's time goes to real traffic; assembly checks these labels
        human = humans.get(case.case_id)
        if human is not None and human != result.label:
            reviews.append(
                _review(case.case_id, ReviewReason.DISAGREEMENT, teacher_id, result, human)
            )
        elif human is None and spot_checked(case.case_id, spot_check):
            reviews.append(_review(case.case_id, ReviewReason.SPOT_CHECK, teacher_id, result, None))
        elif human is None and result.confidence < review_below:
            reviews.append(
                _review(case.case_id, ReviewReason.LOW_CONFIDENCE, teacher_id, result, None)
            )
    insert_arrow(con, "labels", pa.Table.from_pylist(label_rows, _LABEL_SCHEMA))
    insert_failures(con, error_rows)
    added = insert_arrow(con, "review_queue", pa.Table.from_pylist(reviews, _REVIEW_SCHEMA))
    return added, sum(1 for r in reviews if r["reason"] == ReviewReason.SPOT_CHECK)


def failure_row(
    case_id: str, teacher_id: str, failure: TeacherFailure, cost_usd: float, tokens: int
) -> dict[str, Any]:
    """A ``teacher_errors`` row: one failed answer about a case (the cost booked on it)."""
    return {
        "error_id": uuid.uuid4().hex, "case_id": case_id, "teacher_id": teacher_id,
        "kind": failure.kind, "message": failure.message, "cost_usd": cost_usd, "tokens": tokens,
    }  # fmt: skip


def insert_failures(con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Write :func:`failure_row` rows in the caller's transaction."""
    return insert_arrow(con, "teacher_errors", pa.Table.from_pylist(list(rows), _ERROR_SCHEMA))


def spot_checked(case_id: str, fraction: float) -> bool:
    """Whether a case is in the spot-check sample.

    A hash of the case id, not of any answer: the sample cannot lean towards confident (or
    doubtful) answers, a rerun draws the same cases, and every teacher is checked on the same
    cases, so one person's label measures them all.
    """
    return fraction > 0 and stable_unit(f"spot-check\0{case_id}") < fraction


def _review(
    case_id: str, reason: str, teacher_id: str, answer: TeacherAnswer | None, human: str | None
) -> dict[str, Any]:
    return {
        "item_id": _id("review", case_id, reason, teacher_id),
        "case_id": case_id,
        "reason": reason,
        "teacher_label": answer.label if answer else None,
        "teacher_confidence": answer.confidence if answer else None,
        "human_label": human,
        "teacher_id": teacher_id if answer else None,
    }


def queue_unlabeled_for_humans(warehouse: Warehouse) -> int:
    """The human backend: every captured case with no human label and no open item goes to
    review."""
    with warehouse.transaction() as con:
        rows = con.execute(
            "SELECT case_id FROM cases c"
            " WHERE capture_reason NOT IN (SELECT unnest(?::VARCHAR[]))"
            " AND NOT EXISTS (SELECT 1 FROM labels l "
            " WHERE l.case_id = c.case_id AND l.source = 'human') AND NOT EXISTS ("
            " SELECT 1 FROM review_queue r WHERE r.case_id = c.case_id AND r.status = 'open')"
            " ORDER BY ts, case_id",
            [list(IMPORTED_REASONS)],
        ).fetchall()
        items = [
            _review(case_id, ReviewReason.NEEDS_LABEL, "human", None, None) for (case_id,) in rows
        ]
        return insert_arrow(con, "review_queue", pa.Table.from_pylist(items, _REVIEW_SCHEMA))
