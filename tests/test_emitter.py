"""The serving-side emitter against a real broker, and against one that went away."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_topic
from tests.streams_events import escalation, prediction
from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS, ensure_topics
from tutorloop.streams.emitter import PredictionEmitter
from tutorloop.streams.events import PredictionEvent
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.spool_emitter import SpoolingEmitter


def _read_all(settings: Settings, topic: str, expected: int) -> list[bytes]:
    return read_topic(settings.broker.bootstrap_servers, topic, expected=expected)


def test_emitted_events_arrive_and_close_flushes(settings: Settings) -> None:
    ensure_topics(settings, settings.broker.bootstrap_servers)
    # The default capture policy keeps low-confidence predictions: only those of consenting
    # users leave serving with their text; the rest are metadata only.
    events = [
        prediction(confidence=0.2 if i % 3 == 0 else 0.95, consent=i % 2 == 0) for i in range(300)
    ]
    with PredictionEmitter.from_settings(settings) as emitter:
        assert all(emitter.emit(e) for e in events)
        assert emitter.escalate(escalation(events[0].request_id))
    # close() flushed: everything is on the broker, nothing failed
    assert emitter.stats.delivered == 301
    assert emitter.stats.failed == emitter.stats.dropped == 0
    policy = CapturePolicy.from_settings(settings.capture)
    keeps = [e.consent.training and policy.reason(e) is not None for e in events]
    # Consenting low-confidence ones (i % 6 == 0) and a few audit-sampled confident ones.
    assert all(keeps[::6]) and not any(keeps[1::2]) and 50 <= sum(keeps) < 60
    assert emitter.stats.with_text == sum(keeps)
    values = _read_all(settings, settings.topic(PREDICTIONS), 300)
    expected = [e if keep else e.without_text() for e, keep in zip(events, keeps, strict=True)]
    assert sorted(values) == sorted(e.to_bytes() for e in expected)
    assert len(_read_all(settings, settings.topic(ESCALATIONS), 1)) == 1


@pytest.mark.parametrize("emitter_kind", ["direct", "spooling"])
def test_records_carry_the_events_own_time(
    settings: Settings, tmp_path: Path, emitter_kind: str
) -> None:
    """Retention counts from when an event happened, also for one a spool sends late."""
    from kafka import KafkaConsumer, TopicPartition

    ensure_topics(settings, settings.broker.bootstrap_servers)
    topic = settings.topic(PREDICTIONS)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    event = prediction(confidence=0.95).model_copy(update={"ts": an_hour_ago})
    if emitter_kind == "direct":
        emitter: Any = PredictionEmitter.from_settings(settings)
    else:
        spooled = settings.model_copy(update={"data_dir": tmp_path})
        emitter = SpoolingEmitter.from_settings(spooled)
    with emitter:
        assert emitter.emit(event)
    consumer = KafkaConsumer(bootstrap_servers=settings.broker.bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while str(event.event_id) not in found and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                found |= {json.loads(r.value)["event_id"]: r.timestamp for r in records}
    finally:
        consumer.close()
    assert found[str(event.event_id)] == int(an_hour_ago.timestamp() * 1000)


@pytest.mark.parametrize("emitter_kind", ["direct", "spooling"])
def test_consented_mode_never_sends_the_text_of_users_who_did_not_consent(
    settings: Settings, tmp_path: Path, emitter_kind: str
) -> None:
    """``emit_text = "consented"`` widens the text to every consented prediction, never to
    an unconsented one (both emitters, the direct and the spooling one)."""
    settings = settings.model_copy(
        update={
            "streams": settings.streams.model_copy(update={"emit_text": "consented"}),
            "data_dir": tmp_path,
        }
    )
    ensure_topics(settings, settings.broker.bootstrap_servers)
    events = [
        prediction(confidence=0.95, consent=i % 2 == 0, text=f"query {i}: card 4000 0000 {i:04}")
        for i in range(20)
    ]
    emitter: PredictionEmitter | SpoolingEmitter = (
        PredictionEmitter.from_settings(settings)
        if emitter_kind == "direct"
        else SpoolingEmitter.from_settings(settings)
    )
    with emitter:
        assert all(emitter.emit(e) for e in events)
    assert emitter.stats.with_text == 10
    values = _read_all(settings, settings.topic(PREDICTIONS), 20)
    expected = [e if e.consent.training else e.without_text() for e in events]
    assert sorted(values) == sorted(e.to_bytes() for e in expected)
    for i in range(1, 20, 2):  # no unconsented text on the topic, in any form
        assert not any(f"query {i}:".encode() in v for v in values)


def test_broker_outage_never_blocks_or_raises_into_the_request_path(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker={"port": free_port()})
    broker = EmbeddedBroker(settings)
    state = broker.up()
    ensure_topics(settings, state.bootstrap_servers)
    failures: list[tuple[PredictionEvent, str]] = []
    emitter = PredictionEmitter(
        state.bootstrap_servers,
        max_block_ms=50,
        buffer_bytes=64 * 1024,
        delivery_timeout_ms=2000,
        on_error=lambda ev, exc: failures.append((ev, type(exc).__name__)),  # type: ignore[arg-type]
    )
    assert emitter.emit(prediction())
    emitter.flush(10)
    broker.down()

    slowest = 0.0
    text = "x" * 4000  # fills the 64 KiB buffer quickly
    for _ in range(200):
        started = time.perf_counter()
        emitter.emit(prediction(text=text))  # must neither raise nor hang
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5  # max_block_ms=50 plus scheduling slack, never a hang
    deadline = time.monotonic() + 20
    while emitter.stats.failed + emitter.stats.dropped < 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emitter.stats.delivered == 1
    assert emitter.stats.failed + emitter.stats.dropped == 200
    assert len(failures) == 200
    emitter.close(timeout_s=2)
    assert not emitter.emit(prediction())  # closed: reported, not raised
    assert emitter.stats.dropped >= 1
