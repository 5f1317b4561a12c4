"""The idempotent sink: decoded, policy-checked, scrubbed events into the warehouse.

Every insert is keyed (audit and cases by event id, labels by escalation and case) and uses
``ON CONFLICT DO NOTHING``, so a batch delivered twice — after a crash, before its offsets
were committed — changes nothing the second time. The caller commits Kafka offsets only
after these methods return, i.e. after the warehouse transaction committed.

Raw text exists here only in memory: the audit table never stores text, cases store the
scrubbed text, and dead letters carry a hash of the payload instead of the payload.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.warehouse import Warehouse, insert_arrow
from tutorloop.labeling.case_store import insert_cases
from tutorloop.privacy.scrubber import RegexScrubber, Scrubber
from tutorloop.privacy.tombstone import erased_users, pseudonymize_erased
from tutorloop.streams.batch import BatchOutcome, RawRecord, RecordFetcher
from tutorloop.streams.decoding import dead_letter, decode_records, read_back
from tutorloop.streams.escalation_owner import (
    attach_escalations,
    claim_owners,
    escalated_requests,
    request_key,
    resolve_owners,
)
from tutorloop.streams.events import (
    PredictionEvent,
    UnknownFields,
    decode_escalation,
    decode_prediction,
)
from tutorloop.streams.parking import Parked, due, next_due, park, settle
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink_rows import AUDIT_SCHEMA, ESCALATION_SCHEMA, audit_reason, case_row

log = logging.getLogger(__name__)


class CaptureSink:
    """Writes batches of raw prediction and escalation records into the warehouse."""

    def __init__(
        self,
        warehouse: Warehouse,
        policy: CapturePolicy,
        scrubber: Scrubber,
        *,
        predictions_topic: str,
        escalations_topic: str,
        fetcher: RecordFetcher | None = None,
        escalation_fetcher: RecordFetcher | None = None,
        unknown_fields: UnknownFields = "drop",
        retention_hours: float = 72.0,
    ) -> None:
        self.warehouse = warehouse
        self.policy = policy
        self.scrubber = scrubber
        self.predictions_topic = predictions_topic
        self.escalations_topic = escalations_topic
        self.fetcher = fetcher  # the predictions topic
        self.escalation_fetcher = escalation_fetcher
        self.unknown_fields: UnknownFields = unknown_fields
        self.retention_hours = retention_hours  # of the predictions topic: parked rows expire
        # When parked rows are next due: unknown at start (rows parked before a restart), then
        # kept up to date by this sink. Rows another worker parks are retried by that worker.
        self._next_due: datetime | None = datetime.min.replace(tzinfo=UTC)
        self._structured = RegexScrubber()
        # Agents run batches in threads. Serializing them in-process makes each
        # check-then-insert (escalation vs prediction) atomic; across processes DuckDB's file
        # lock already serializes writers.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the Kafka readers this sink holds."""
        for fetcher in (self.fetcher, self.escalation_fetcher):
            close = getattr(fetcher, "close", None)
            if close is not None:
                close()

    # -- predictions ------------------------------------------------------------------------

    def write_predictions(self, records: Sequence[RawRecord]) -> BatchOutcome:
        out = BatchOutcome(consumed=len(records))
        events = decode_records(
            records, decode_prediction, self.predictions_topic, out, self.unknown_fields
        )
        if not events:
            return out
        request_ids = sorted({ev.request_id for ev, _ in events})

        audit: list[dict[str, Any]] = []
        capture: list[tuple[PredictionEvent, str]] = []
        for ev, rec in events:
            reason = self.policy.reason(ev)
            captured = reason is not None and ev.consent.training and ev.text is not None
            if captured and reason is not None:
                capture.append((ev, reason))
            elif reason is not None and ev.consent.training:
                out.no_text += 1  # serving's policy would not keep it: configs differ
            audit.append(
                {
                    "event_id": str(ev.event_id),
                    "ts": ev.ts,
                    "tenant_id": ev.tenant_id,
                    "user_id": ev.user_id,
                    "request_id": ev.request_id,
                    "model_version": ev.model_version,
                    "label": ev.label,
                    "confidence": ev.confidence,
                    "margin": ev.margin,
                    "consent_training": ev.consent.training,
                    "captured": captured,
                    "capture_reason": reason if captured else audit_reason(ev, reason),
                    "policy_version": self.policy.version,
                    "kafka_partition": rec.partition,
                    "kafka_offset": rec.offset,
                    "answered_by": ev.answered_by,
                    "served_label": ev.served_label,
                }
            )
        scrubbed = self.scrubber.scrub_batch([ev.text or "" for ev, _ in capture])
        cases = [case_row(ev, s, reason) for (ev, reason), s in zip(capture, scrubbed, strict=True)]
        case_ids = {c["case_id"] for c in cases}
        uncaptured = {
            request_key(ev): ev
            for ev, _ in events
            if ev.consent.training and str(ev.event_id) not in case_ids
        }

        with self._lock, self.warehouse.transaction() as con:
            erased = pseudonymize_erased(con, audit)  # audited under the erasure, not the id
            out.audited = insert_arrow(
                con, "predictions_audit", pa.Table.from_pylist(audit, AUDIT_SCHEMA)
            )
            out.duplicates += len(audit) - out.audited
            cases = self._drop_erased(con, cases, out, erased)
            inserted_cases = insert_cases(con, cases)
            if inserted_cases:
                out.captured.update(c["capture_reason"] for c in cases)
            # Escalations that arrived before their prediction: capture it now. Rare, so
            # scrubbing these few inside the transaction costs little.
            claim_owners(con, request_ids)
            late = escalated_requests(con, list(uncaptured))
            late_events = [uncaptured[key] for key in late if uncaptured[key].text is not None]
            textless = [uncaptured[key] for key in late if uncaptured[key].text is None]
            if late_events:
                late_scrubbed = self.scrubber.scrub_batch([ev.text or "" for ev in late_events])
                late_cases = self._drop_erased(con, [
                    case_row(ev, s, CaptureReason.ESCALATED)
                    for ev, s in zip(late_events, late_scrubbed, strict=True)
                ], out)  # fmt: skip
                if insert_cases(con, late_cases):
                    out.captured.update(CaptureReason.ESCALATED for _ in late_cases)
                self._mark_captured(con, [c["case_id"] for c in late_cases])
            out.human_labels += attach_escalations(con, request_ids)
        if textless:
            self._capture_with_escalation_text(textless, request_ids, out)
        return out

    def _capture_with_escalation_text(
        self, textless: list[PredictionEvent], request_ids: list[str], out: BatchOutcome
    ) -> None:
        """Predictions sent without text whose escalation (carrying it) came first: the text
        is read back from the escalation's record in Kafka, never from the warehouse."""
        positions = self.warehouse.query(
            "SELECT request_id, tenant_id, user_id, kafka_partition, kafka_offset FROM escalations"
            " WHERE request_id IN (SELECT unnest(?::VARCHAR[])) AND kafka_offset IS NOT NULL"
            " AND user_id IS NOT NULL",
            [sorted(ev.request_id for ev in textless)],
        )
        texts: dict[tuple[str, str, str], str] = {}
        for request_id, tenant, user, partition, offset in positions:
            key = (tenant, user, request_id)
            if key in texts or self.escalation_fetcher is None:
                continue
            raw = self.escalation_fetcher.fetch(partition, offset)
            escalation = read_back(raw, decode_escalation)
            if escalation is not None and escalation.request_id == request_id and escalation.text:
                texts[key] = escalation.text
        events = [
            ev.model_copy(update={"text": texts[request_key(ev)]})
            for ev in textless
            if request_key(ev) in texts
        ]
        out.unrecoverable += len(textless) - len(events)
        self._insert_escalated(events, request_ids, out)

    # -- escalations ------------------------------------------------------------------------

    def write_escalations(self, records: Sequence[RawRecord]) -> BatchOutcome:
        out = BatchOutcome(consumed=len(records))
        events = decode_records(
            records, decode_escalation, self.escalations_topic, out, self.unknown_fields
        )
        if not events:
            return out
        # Reasons are free text and actors may be reviewers' emails: both are scrubbed.
        reasons = self.scrubber.scrub_batch([ev.reason for ev, _ in events])
        actors = self._structured.scrub_batch([ev.actor for ev, _ in events])
        rows = [
            {
                "event_id": str(ev.event_id),
                "ts": ev.ts,
                "request_id": ev.request_id,
                "tenant_id": ev.owner[0],
                "user_id": ev.owner[1],
                "reason": reason.text,
                "human_label": ev.human_label,
                "actor": actor.text,
                "kafka_partition": rec.partition if rec.offset >= 0 else None,
                "kafka_offset": rec.offset if rec.offset >= 0 else None,
            }
            for (ev, rec), reason, actor in zip(events, reasons, actors, strict=True)
        ]
        record_of = {row["event_id"]: rec for row, (_, rec) in zip(rows, events, strict=True)}
        request_ids = sorted({ev.request_id for ev, _ in events})
        with self._lock, self.warehouse.transaction() as con:
            rows = self._drop_erased(con, rows, out)  # of the users they name
            rows, rejected = resolve_owners(con, rows)
            rows = self._drop_erased(con, rows, out)  # of the users found in the audit
            for row, reason in rejected:
                rec = record_of[row["event_id"]]
                out.dead_letters.append(
                    dead_letter(self.escalations_topic, rec, reason, row["event_id"])
                )
            out.escalations = insert_arrow(
                con, "escalations", pa.Table.from_pylist(rows, ESCALATION_SCHEMA)
            )
            out.duplicates += len(rows) - out.escalations
            out.human_labels += attach_escalations(con, request_ids)
            batch = [row["event_id"] for row in rows]
            missing = con.execute(
                "SELECT DISTINCT a.event_id, a.kafka_partition, a.kafka_offset, a.request_id, "
                "a.tenant_id, a.user_id FROM predictions_audit a JOIN escalations e "
                "ON e.request_id = a.request_id AND e.tenant_id = a.tenant_id "
                "AND e.user_id = a.user_id WHERE e.event_id IN (SELECT unnest(?::VARCHAR[])) "
                "AND a.consent_training AND a.kafka_offset IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM cases c WHERE c.case_id = a.event_id)",
                [batch],
            ).fetchall()
        if missing:
            by_event = {str(ev.event_id): ev for ev, _ in events}
            texts = {
                (row["tenant_id"], row["user_id"], row["request_id"]): text
                for row in rows
                if (text := by_event[row["event_id"]].text) is not None
            }
            self._capture_from_kafka(missing, request_ids, texts, out)
        return out

    def _capture_from_kafka(
        self,
        missing: list[tuple[str, int, int, str, str, str]],
        request_ids: list[str],
        texts: dict[tuple[str, str, str], str],
        out: BatchOutcome,
    ) -> None:
        """Capture predictions escalated after they were audited but not captured.

        The warehouse never held their text. Kafka holds the event (within retention), with
        its text when serving sent one; otherwise the escalation carries it (``texts``, by
        tenant, user and request id).
        """
        recovered: list[PredictionEvent] = []
        unread: list[tuple[str, str, int, int]] = []
        for event_id, partition, offset, request_id, *_ in missing:
            raw = self.fetcher.fetch(partition, offset) if self.fetcher is not None else None
            if raw is None and self.fetcher is not None:
                unread.append((event_id, request_id, partition, offset))  # a broker hiccup?
                continue
            event = read_back(raw, decode_prediction)
            if event is not None and event.text is None and request_key(event) in texts:
                event = event.model_copy(update={"text": texts[request_key(event)]})
            if event is None or str(event.event_id) != event_id or event.text is None:
                out.unrecoverable += 1
                log.warning(
                    "escalated prediction %s is not readable at %s[%d]@%d, or neither it "
                    "nor its escalation carries text; its case cannot be captured",
                    event_id,
                    self.predictions_topic,
                    partition,
                    offset,
                )
                continue
            recovered.append(event)
        self._insert_escalated(recovered, request_ids, out)
        if unread:
            now = datetime.now(UTC)
            with self._lock, self.warehouse.transaction() as con:
                out.parked += park(con, unread, now)
            self._next_due = now  # look again on the next retry tick

    def retry_parked(self, now: datetime | None = None) -> BatchOutcome:
        """Read back the parked predictions that are due (:mod:`streams.parking`)."""
        now = now or datetime.now(UTC)
        out = BatchOutcome()
        # Most ticks have nothing due: known without opening the warehouse (whose open would
        # compete with the sink for DuckDB's one writer).
        if self.fetcher is None or self._next_due is None or now < self._next_due:
            return out
        with self.warehouse.connect() as con:
            rows = due(con, now)
            if not rows:
                self._next_due = next_due(con)
                return out
        events: list[PredictionEvent] = []
        read: list[str] = []
        unread: list[Parked] = []
        for row in rows:
            raw = self.fetcher.fetch(row.partition, row.offset)
            if raw is None:
                unread.append(row)
                continue
            read.append(row.prediction_event_id)
            event = read_back(raw, decode_prediction)
            if event is None or str(event.event_id) != row.prediction_event_id:
                out.unrecoverable += 1  # the position holds another record
                continue
            events.append(event)
        request_ids = sorted({row.request_id for row in rows})
        self._insert_escalated([e for e in events if e.text is not None], request_ids, out)
        textless = [e for e in events if e.text is None]
        if textless:
            self._capture_with_escalation_text(textless, request_ids, out)
        with self._lock, self.warehouse.transaction() as con:
            out.unrecoverable += settle(
                con, read=read, unread=unread, now=now, retention_hours=self.retention_hours
            )
            self._next_due = next_due(con)
        return out

    def _insert_escalated(
        self, recovered: list[PredictionEvent], request_ids: list[str], out: BatchOutcome
    ) -> None:
        if not recovered:
            return
        scrubbed = self.scrubber.scrub_batch([ev.text or "" for ev in recovered])
        cases = [
            case_row(ev, s, CaptureReason.ESCALATED)
            for ev, s in zip(recovered, scrubbed, strict=True)
        ]
        with self._lock, self.warehouse.transaction() as con:
            cases = self._drop_erased(con, cases, out)
            if insert_cases(con, cases):
                out.captured.update(CaptureReason.ESCALATED for _ in cases)
            self._mark_captured(con, [c["case_id"] for c in cases])
            out.human_labels += attach_escalations(con, request_ids)

    # -- shared -----------------------------------------------------------------------------

    @staticmethod
    def _drop_erased(
        con: duckdb.DuckDBPyConnection,
        cases: list[dict[str, Any]],
        out: BatchOutcome,
        erased: set[tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """The case rows whose (tenant, user) was not erased (``erased``, when the caller
        looked already); the others are counted in ``out``."""
        if erased is None:
            named = [(c["tenant_id"], c["user_id"]) for c in cases if c["user_id"] is not None]
            erased = erased_users(con, named)
        if not erased:
            return cases
        kept = [c for c in cases if (c["tenant_id"], c["user_id"]) not in erased]
        out.erased += len(cases) - len(kept)
        return kept

    @staticmethod
    def _mark_captured(con: duckdb.DuckDBPyConnection, event_ids: list[str]) -> None:
        if event_ids:
            con.execute(
                "UPDATE predictions_audit SET captured = true, capture_reason = ? "
                "WHERE event_id IN (SELECT unnest(?::VARCHAR[])) AND NOT captured",
                [CaptureReason.ESCALATED, event_ids],
            )
