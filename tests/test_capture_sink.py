"""The sink on a real DuckDB file, without Kafka: policy, idempotency, DLQ, escalations."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.streams_events import escalation, prediction
from tests.warehouse_cases import regex_sink
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.streams.batch import RawRecord
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink import CaptureSink

EMAIL = "jane.canary@example.com"


class _KafkaLog:
    """Stands in for the topic the sink re-reads escalated predictions from."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, int], bytes] = {}

    def fetch(self, partition: int, offset: int) -> bytes | None:
        return self.records.get((partition, offset))


@pytest.fixture
def kafka_log() -> _KafkaLog:
    return _KafkaLog()


@pytest.fixture
def warehouse(any_warehouse: Warehouse) -> Warehouse:
    # Every sink test runs on DuckDB and on a real PostgreSQL server.
    return any_warehouse


@pytest.fixture
def sink(warehouse: Warehouse, kafka_log: _KafkaLog) -> CaptureSink:
    policy = CapturePolicy.from_settings(
        CaptureSettings(confidence_below=0.6, margin_below=0.1, audit_sample_rate=0.0)
    )
    return CaptureSink(
        warehouse,
        policy,
        RegexScrubber(),
        predictions_topic="p",
        escalations_topic="e",
        fetcher=kafka_log,
    )


def _records(*events: object, kafka_log: _KafkaLog | None = None) -> list[RawRecord]:
    out = []
    for i, ev in enumerate(events):
        raw = ev if isinstance(ev, bytes) else ev.to_bytes()  # type: ignore[attr-defined]
        out.append(RawRecord(raw, 0, i))
        if kafka_log is not None:
            kafka_log.records[(0, i)] = raw
    return out


def test_policy_reasons() -> None:
    policy = CapturePolicy.from_settings(
        CaptureSettings(
            confidence_below=0.6, margin_below=0.1, audit_sample_rate=0.0, always_labels=["fraud"]
        )
    )
    assert policy.reason(prediction(confidence=0.5)) == CaptureReason.LOW_CONFIDENCE
    assert policy.reason(prediction(confidence=0.7, second=0.65)) == CaptureReason.LOW_MARGIN
    assert policy.reason(prediction(confidence=0.99, label="fraud")) == "watched_label"
    assert policy.reason(prediction(confidence=0.99)) is None


def test_audit_sample_is_deterministic_and_near_its_rate() -> None:
    policy = CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0.1))
    events = [prediction(confidence=0.99) for _ in range(3000)]
    first = [policy.reason(e) for e in events]
    assert first == [policy.reason(e) for e in events]
    rate = first.count(CaptureReason.AUDIT_SAMPLE) / len(events)
    assert 0.08 < rate < 0.12


def test_audit_every_prediction_capture_with_consent_only(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    low = prediction(confidence=0.3, text=f"mail {EMAIL} about my card")
    low_no_consent = prediction(confidence=0.3, consent=False, text=f"mail {EMAIL}")
    confident = prediction(confidence=0.99)
    out = sink.write_predictions(_records(low, low_no_consent, confident))
    assert (out.audited, sum(out.captured.values()), out.dead_letters) == (3, 1, [])
    audit = dict(warehouse.query("SELECT event_id, capture_reason FROM predictions_audit"))
    assert audit == {
        str(low.event_id): CaptureReason.LOW_CONFIDENCE,
        str(low_no_consent.event_id): "no_consent",
        str(confident.event_id): None,
    }
    [(case_id, text, findings)] = warehouse.query("SELECT case_id, text, scrub_findings FROM cases")
    assert case_id == str(low.event_id)
    assert EMAIL not in text and "<EMAIL_ADDRESS>" in text
    assert json.loads(findings) == {"EMAIL_ADDRESS": 1}
    columns = {
        r[0]
        for r in warehouse.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'predictions_audit'"
        )
    }
    assert "text" not in columns


def test_who_answered_is_in_the_audit_and_its_lineage_view(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    by_teacher = prediction(confidence=0.3, answered_by="fallback", served_label="card_arrival")
    abstained = prediction(confidence=0.2, answered_by="nobody")
    older = prediction()  # a producer from before the fields existed
    sink.write_predictions(_records(by_teacher, abstained, older))
    rows = {r[0]: r[1:] for r in warehouse.query(
        "SELECT event_id, label, answered_by, served_label FROM lineage_predictions")}  # fmt: skip
    assert rows == {
        str(by_teacher.event_id): ("top_up", "fallback", "card_arrival"),
        str(abstained.event_id): ("top_up", "nobody", None),
        str(older.event_id): ("top_up", None, None),
    }


def test_redelivered_batch_changes_nothing(sink: CaptureSink, warehouse: Warehouse) -> None:
    events = [prediction(confidence=0.3) for _ in range(5)]
    sink.write_predictions(_records(*events))
    again = sink.write_predictions(_records(*events, events[0]))
    assert again.audited == 0
    assert again.duplicates == 6
    assert warehouse.query("SELECT count(*) FROM predictions_audit") == [(5,)]
    assert warehouse.query("SELECT count(*) FROM cases") == [(5,)]


def test_bad_records_become_dead_letters_and_the_rest_is_stored(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    good = prediction()
    out = sink.write_predictions(_records(b"{oops", good, EMAIL.encode()))
    assert out.audited == 1
    assert [d.offset for d in out.dead_letters] == [0, 2]
    for letter in out.dead_letters:
        assert EMAIL not in letter.to_bytes().decode()


def test_escalation_after_an_uncaptured_prediction_captures_it_from_kafka(
    sink: CaptureSink, warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    confident = prediction(confidence=0.99, text=f"write to {EMAIL}")
    sink.write_predictions(_records(confident, kafka_log=kafka_log))
    assert warehouse.query("SELECT count(*) FROM cases") == [(0,)]
    out = sink.write_escalations(_records(escalation(confident.request_id, "card_lost")))
    assert out.captured[CaptureReason.ESCALATED] == 1 and out.human_labels == 1
    [(reason, text)] = warehouse.query("SELECT capture_reason, text FROM cases")
    assert reason == CaptureReason.ESCALATED and EMAIL not in text
    assert warehouse.query("SELECT source, label FROM labels") == [("human", "card_lost")]
    assert warehouse.query("SELECT captured FROM predictions_audit") == [(True,)]


def test_escalation_before_its_prediction_is_attached_when_it_arrives(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    confident = prediction(confidence=0.99)
    sink.write_escalations(_records(escalation(confident.request_id, "card_lost")))
    assert warehouse.query("SELECT count(*) FROM escalations WHERE case_id IS NULL") == [(1,)]
    out = sink.write_predictions(_records(confident))
    assert out.captured[CaptureReason.ESCALATED] == 1 and out.human_labels == 1
    assert warehouse.query("SELECT count(*) FROM escalations WHERE case_id IS NULL") == [(0,)]


def test_escalation_of_a_prediction_without_consent_stores_no_case(
    sink: CaptureSink, warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    private = prediction(confidence=0.99, consent=False)
    sink.write_predictions(_records(private, kafka_log=kafka_log))
    sink.write_escalations(_records(escalation(private.request_id)))
    assert warehouse.query("SELECT count(*) FROM cases") == [(0,)]
    assert warehouse.query("SELECT count(*) FROM labels") == [(0,)]


def test_an_escalated_prediction_kafka_cannot_give_back_is_parked_and_retried(
    sink: CaptureSink, warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    confident = prediction(confidence=0.99, text=f"write to {EMAIL}")
    [record] = _records(confident)  # audited, but not (yet) readable from the fake topic
    sink.write_predictions([record])
    out = sink.write_escalations(_records(escalation(confident.request_id, "card_lost")))
    assert out.parked == 1 and out.unrecoverable == 0 and out.human_labels == 0
    assert warehouse.query("SELECT count(*) FROM escalations") == [(1,)]
    # Not due yet, then due but still unreadable: backed off, not lost.
    assert sink.retry_parked().unrecoverable == 0
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert sink.retry_parked(later).unrecoverable == 0
    assert warehouse.query("SELECT attempts FROM parked_escalations") == [(1,)]
    # The broker answers again: the case is captured and the human label lands.
    kafka_log.records[(0, 0)] = record.value
    out = sink.retry_parked(later + timedelta(minutes=10))
    assert out.captured[CaptureReason.ESCALATED] == 1 and out.human_labels == 1
    assert warehouse.query("SELECT source, label FROM labels") == [("human", "card_lost")]
    assert warehouse.query("SELECT count(*) FROM parked_escalations") == [(0,)]
    assert EMAIL not in json.dumps(warehouse.query("SELECT * FROM cases"), default=str)


def test_a_parked_prediction_expires_after_the_topics_retention(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    confident = prediction(confidence=0.99)
    sink.write_predictions(_records(confident))
    sink.write_escalations(_records(escalation(confident.request_id)))
    past_retention = datetime.now(UTC) + timedelta(hours=sink.retention_hours, minutes=1)
    assert sink.retry_parked(past_retention).unrecoverable == 1
    assert warehouse.query("SELECT status FROM parked_escalations") == [("expired",)]
    assert sink.retry_parked(past_retention + timedelta(days=1)).unrecoverable == 0  # once


def test_a_text_less_prediction_is_captured_from_its_escalations_text(
    sink: CaptureSink, warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    # Serving sent only metadata for this confident prediction; the product escalates it with
    # the query, which is scrubbed into the case and stored nowhere raw.
    confident = prediction(confidence=0.99).without_text()
    sink.write_predictions(_records(confident, kafka_log=kafka_log))
    out = sink.write_escalations(
        _records(escalation(confident.request_id, "card_lost", text=f"write to {EMAIL}"))
    )
    assert out.captured[CaptureReason.ESCALATED] == 1 and out.unrecoverable == 0
    [(text,)] = warehouse.query("SELECT text FROM cases")
    assert text.startswith("write to") and EMAIL not in text
    dump = json.dumps(warehouse.query("SELECT * FROM escalations"), default=str)
    assert "write to" not in dump


def test_without_text_anywhere_an_escalated_case_is_counted_unrecoverable(
    sink: CaptureSink, warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    confident = prediction(confidence=0.99).without_text()
    sink.write_predictions(_records(confident, kafka_log=kafka_log))
    out = sink.write_escalations(_records(escalation(confident.request_id)))
    assert out.unrecoverable == 1 and out.human_labels == 0
    # Escalated (without text) before a text-less prediction arrives: counted on arrival.
    early = prediction(confidence=0.99).without_text()
    sink.write_escalations(_records(escalation(early.request_id)))
    assert sink.write_predictions(_records(early)).unrecoverable == 1
    assert warehouse.query("SELECT count(*) FROM cases") == [(0,)]


def test_an_escalation_that_comes_first_lends_its_text_from_kafka(
    warehouse: Warehouse, kafka_log: _KafkaLog
) -> None:
    escalations_log = _KafkaLog()
    sink = regex_sink(warehouse, fetcher=kafka_log, escalation_fetcher=escalations_log)
    early = prediction(confidence=0.99).without_text()
    sink.write_escalations(
        _records(escalation(early.request_id, text=f"mail {EMAIL}"), kafka_log=escalations_log)
    )
    # The warehouse holds the escalation's position, not its text.
    assert warehouse.query("SELECT kafka_partition, kafka_offset FROM escalations") == [(0, 0)]
    assert "mail" not in json.dumps(warehouse.query("SELECT * FROM escalations"), default=str)
    out = sink.write_predictions(_records(early))
    assert out.captured[CaptureReason.ESCALATED] == 1 and out.unrecoverable == 0
    assert out.human_labels == 1
    [(text,)] = warehouse.query("SELECT text FROM cases")
    assert text.startswith("mail") and EMAIL not in text


def test_a_capturable_prediction_sent_without_text_is_audited_as_no_text(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    unsure = prediction(confidence=0.2).without_text()  # serving's policy differed
    out = sink.write_predictions(_records(unsure))
    assert out.no_text == 1 and out.audited == 1 and not out.captured
    assert warehouse.query("SELECT captured, capture_reason FROM predictions_audit") == [
        (False, "no_text")
    ]


def test_an_added_optional_field_is_counted_and_the_event_stored(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    newer = json.loads(prediction(confidence=0.2).to_bytes())
    newer["channel"] = "mobile"  # a producer one minor version ahead
    out = sink.write_predictions([RawRecord(json.dumps(newer).encode(), 0, 0)])
    assert out.audited == 1 and out.unknown_fields == 1 and not out.dead_letters
    assert "mobile" not in json.dumps(warehouse.query("SELECT * FROM cases"), default=str)
    sink.unknown_fields = "reject"
    newer["event_id"] = str(uuid.uuid4())
    out = sink.write_predictions([RawRecord(json.dumps(newer).encode(), 0, 1)])
    assert out.audited == 0 and "unknown field(s) channel" in out.dead_letters[0].reason


def _as_version_1(event: object) -> bytes:
    """The event as a producer still on contract version 1 sends it."""
    data = json.loads(event.to_bytes())  # type: ignore[attr-defined]
    data["schema_version"] = 1
    if "top_k" in data:
        data["top_k"] = [[t["label"], t["probability"]] for t in data["top_k"]]
    return json.dumps(data).encode()


def test_a_previous_version_producer_is_stored_and_counted_during_the_window(
    sink: CaptureSink, warehouse: Warehouse
) -> None:
    unsure = prediction(confidence=0.2, second=0.15)
    out = sink.write_predictions(_records(_as_version_1(unsure)))
    assert out.audited == 1 and out.previous_version == 1 and not out.dead_letters
    assert sum(out.captured.values()) == 1
    assert warehouse.query("SELECT margin FROM predictions_audit") == [(pytest.approx(0.05),)]
    label = sink.write_escalations(_records(_as_version_1(escalation(unsure.request_id))))
    assert label.previous_version == 1 and label.human_labels == 1
