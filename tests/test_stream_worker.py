"""Stream workers against the real tansu broker and a real DuckDB file (subprocesses)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import (
    WorkerProcess,
    make_settings,
    make_stream_env,
    read_topic,
    run_cli,
    wait_until,
)
from tests.streams_events import escalation, prediction
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS, PREDICTIONS_DLQ, ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.streams.events import PredictionEvent
from tutorloop.streams.policy import CapturePolicy

CANARY = "Zebulon Quimby zq@canary.example"


def _count(wh: Warehouse, table: str) -> int:
    if not wh.path.exists():
        return 0
    return int(wh.query(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def producer(settings: Settings) -> Iterator[KafkaProducer]:
    ensure_topics(settings, settings.broker.bootstrap_servers)
    p = KafkaProducer(bootstrap_servers=settings.broker.bootstrap_servers, linger_ms=5)
    yield p
    p.close()


def _send(p: KafkaProducer, settings: Settings, events: list[PredictionEvent]) -> None:
    for ev in events:
        p.send(settings.topic(PREDICTIONS), key=ev.key, value=ev.to_bytes())
    p.flush()


def _dlq(settings: Settings, expected: int) -> list[dict[str, object]]:
    values = read_topic(
        settings.broker.bootstrap_servers,
        settings.topic(PREDICTIONS_DLQ),
        expected=expected,
        timeout=30,
    )
    return [json.loads(v) for v in values]


def _mixed_events(n: int) -> list[PredictionEvent]:
    events = []
    for i in range(n):
        events.append(
            prediction(
                confidence=0.3 if i % 5 == 0 else 0.97,
                consent=i % 4 != 0,
                user_id=f"u-{i % 13}",
                text=f"{CANARY} asks about card {i}",
            )
        )
    return events


def _expected_cases(events: list[PredictionEvent]) -> dict[str, str | None]:
    """Case id → capture reason under the policy the workers run with (see stream_env)."""
    policy = CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0.05))
    return {
        str(e.event_id): policy.reason(e)
        for e in events
        if e.consent.training and policy.reason(e) is not None
    }


@pytest.mark.parametrize("sink_process", ["true", "false"])
def test_n_events_give_exactly_the_expected_rows(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
    sink_process: str,
) -> None:
    # The sink in its own process (the default) and in the worker's.
    events = _mixed_events(400)
    expected_cases = _expected_cases(events)
    _send(producer, settings, events)
    port = free_port()
    worker = WorkerProcess(
        stream_env,
        tmp_path / "w.log",
        TUTORLOOP_STREAMS__METRICS_PORT=str(port),
        TUTORLOOP_STREAMS__SINK_PROCESS=sink_process,
    )
    try:
        wait_until(lambda: _count(warehouse, "predictions_audit") == 400)
        time.sleep(1.0)
        assert _count(warehouse, "predictions_audit") == 400
        metrics = _metrics(port)
        # Caught up and committed, the lag of every partition is 0 (not -1: faust's committed
        # offset is already the next one to read).
        wait_until(lambda: set(_lags(port).values()) == {0.0}, timeout=30)
    finally:
        assert worker.stop() == 0, worker.output()[-2000:]
    cases = dict(warehouse.query("SELECT case_id, capture_reason FROM cases"))
    assert cases == expected_cases
    assert "Worker ready" in worker.output()
    assert 'tutorloop_streams_consumed_total{agent="predictions"} 400.0' in metrics
    assert 'tutorloop_streams_audited_total{agent="predictions"} 400.0' in metrics
    assert "tutorloop_streams_batch_seconds_count" in metrics
    # Scrubbed: the canary's email never reached the warehouse file or the worker's log.
    assert b"zq@canary.example" not in warehouse.path.read_bytes()
    assert "zq@canary.example" not in worker.output()
    stats = run_cli(
        "streams", "stats", "--json", env={"TUTORLOOP_WAREHOUSE__PATH": str(warehouse.path)}
    )
    summary = json.loads(stats.stdout)
    assert summary["predictions_audited"] == 400
    assert summary["cases"] == len(expected_cases)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _lags(port: int) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in _metrics(port).splitlines()
        if line.startswith("tutorloop_streams_lag{")
    }


def _tampered(old: bytes, new: bytes) -> bytes:
    """A valid prediction with one piece of its JSON replaced."""
    raw = prediction().to_bytes()
    assert old in raw
    return raw.replace(old, new)


_TEXT = b'"how do I top up my card?"'
_CONFIDENCE = b'"confidence":0.95'

BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("not_json", b"this is {not json", "not JSON"),
    ("missing_field", json.dumps({"event_id": "x"}).encode(), "Field required"),
    ("wrong_type", _tampered(_CONFIDENCE, b'"confidence":"hi"'), "confidence"),
    (
        "unknown_version",
        _tampered(b'"schema_version":2', b'"schema_version":9'),
        "unknown schema_version 9",
    ),
    ("empty_text", _tampered(_TEXT, b'""'), "text"),
    ("one_mb_text", _tampered(_TEXT, json.dumps(CANARY + "x" * 1_000_000).encode()), "text"),
    ("invalid_utf8", b'{"text": "\xc3\x28 ' + CANARY.encode() + b'"}', "UTF-8"),
    ("nan_confidence", _tampered(_CONFIDENCE, b'"confidence":NaN'), "not JSON"),
    ("negative_confidence", _tampered(_CONFIDENCE, b'"confidence":-0.5'), "confidence"),
]


@pytest.fixture(scope="module")
def bad_input_run(
    broker_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[dict[str, object]], list[PredictionEvent], Warehouse]]:
    """One worker fed each bad input followed by a good event, plus a duplicate event id."""
    tmp_path = tmp_path_factory.mktemp("bad-input")
    settings = make_settings(tmp_path / "data", broker_bootstrap)
    stream_env = make_stream_env(settings, f"g-{uuid.uuid4().hex[:10]}")
    warehouse = open_warehouse(settings)
    ensure_topics(settings, broker_bootstrap)
    goods: list[PredictionEvent] = []
    topic = settings.topic(PREDICTIONS)
    producer_big = KafkaProducer(
        bootstrap_servers=settings.broker.bootstrap_servers, max_request_size=4_000_000
    )
    for _, raw, _ in BAD_INPUTS:
        producer_big.send(topic, key=b"k", value=raw)
        good = prediction(confidence=0.3, text=f"{CANARY} good")
        producer_big.send(topic, key=b"k", value=good.to_bytes())
        goods.append(good)
    producer_big.send(topic, key=b"k", value=goods[0].to_bytes())  # duplicate event_id
    producer_big.flush()
    producer_big.close()
    worker = WorkerProcess(stream_env, tmp_path / "w.log")
    try:
        wait_until(lambda: _count(warehouse, "predictions_audit") == len(goods))
        letters = _dlq(settings, len(BAD_INPUTS))
    finally:
        assert worker.stop() == 0
    assert CANARY not in worker.output()
    yield letters, goods, warehouse


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(r, why) for _, r, why in BAD_INPUTS],
    ids=[name for name, _, _ in BAD_INPUTS],
)
def test_bad_input_is_dead_lettered_and_the_worker_goes_on(
    bad_input_run: tuple[list[dict[str, object]], list[PredictionEvent], Warehouse],
    raw: bytes,
    reason: str,
) -> None:
    import hashlib

    letters, goods, warehouse = bad_input_run
    digest = hashlib.sha256(raw).hexdigest()
    [letter] = [lt for lt in letters if lt["payload_sha256"] == digest]
    assert reason in str(letter["reason"])
    assert letter["payload_bytes"] == len(raw)
    assert CANARY not in json.dumps(letter)
    # Every good event after every bad one was stored, the duplicate only once.
    audited = {r[0] for r in warehouse.query("SELECT event_id FROM predictions_audit")}
    assert audited == {str(g.event_id) for g in goods}


@pytest.mark.slow
def test_kill_9_mid_batch_then_restart_stores_every_event_exactly_once(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
) -> None:
    total = 3000
    events = _mixed_events(total)
    _send(producer, settings, events)
    small_batches = {"TUTORLOOP_STREAMS__BATCH_MAX": "40"}
    first = WorkerProcess(stream_env, tmp_path / "w1.log", **small_batches)
    wait_until(lambda: _count(warehouse, "predictions_audit") >= 200, interval=0.05)
    first.stop(signal.SIGKILL)
    killed_at = _count(warehouse, "predictions_audit")
    assert 0 < killed_at < total, "the worker must die mid-stream"

    second = WorkerProcess(stream_env, tmp_path / "w2.log", **small_batches)
    try:
        wait_until(lambda: _count(warehouse, "predictions_audit") == total, timeout=120)
        time.sleep(1.5)
    finally:
        assert second.stop() == 0
    ids = [r[0] for r in warehouse.query("SELECT event_id FROM predictions_audit")]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {str(e.event_id) for e in events}
    assert _count(warehouse, "cases") == len(_expected_cases(events))


@pytest.mark.slow
def test_two_workers_in_one_group_store_each_event_once(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
) -> None:
    workers = [WorkerProcess(stream_env, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        time.sleep(8)  # let the second join settle into a two-member assignment
        total = 2000
        events = [prediction(user_id=f"u-{i}") for i in range(total)]  # keys spread partitions
        _send(producer, settings, events)
        wait_until(lambda: _count(warehouse, "predictions_audit") == total, timeout=120)
        time.sleep(2.5)  # one more periodic counters line from each worker
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    ids = [r[0] for r in warehouse.query("SELECT event_id FROM predictions_audit")]
    assert len(ids) == len(set(ids)) == total
    consumed = [w.totals().get("consumed", 0) for w in workers]
    assert all(c > 0 for c in consumed), consumed  # both workers did part of the work


def test_escalations_through_kafka_attach_and_capture(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
) -> None:
    confident = prediction(confidence=0.99, text=f"{CANARY} confident")
    late = prediction(confidence=0.99, text="arrives after its escalation")
    _send(producer, settings, [confident])
    esc_topic = settings.topic(ESCALATIONS)
    early = escalation(late.request_id, "card_lost")
    producer.send(esc_topic, key=early.key, value=early.to_bytes())
    producer.flush()
    worker = WorkerProcess(stream_env, tmp_path / "w.log")
    try:
        wait_until(
            lambda: (
                _count(warehouse, "predictions_audit") == 1
                and _count(warehouse, "escalations") == 1
            )
        )
        after = escalation(confident.request_id, "card_stolen")
        producer.send(esc_topic, key=after.key, value=after.to_bytes())
        _send(producer, settings, [late])
        wait_until(lambda: _count(warehouse, "labels") == 2)
    finally:
        assert worker.stop() == 0
    rows = dict(
        warehouse.query("SELECT c.request_id, l.label FROM labels l JOIN cases c USING (case_id)")
    )
    assert rows == {confident.request_id: "card_stolen", late.request_id: "card_lost"}
    assert b"zq@canary.example" not in warehouse.path.read_bytes()


def test_events_from_an_independent_client_are_consumed(
    settings: Settings,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
) -> None:
    """librdkafka (C) produces; the worker (aiokafka) consumes.

    Debian's kcat 1.7.1 cannot be used: its librdkafka 2.0.2 fails to parse tansu's
    ApiVersion v3 response. confluent-kafka bundles a current librdkafka.
    """
    from confluent_kafka import Producer

    ensure_topics(settings, settings.broker.bootstrap_servers)
    events = [prediction(confidence=0.2) for _ in range(20)]
    producer = Producer({"bootstrap.servers": settings.broker.bootstrap_servers})
    for e in events:
        producer.produce(settings.topic(PREDICTIONS), key=e.key, value=e.to_bytes())
    assert producer.flush(15) == 0
    worker = WorkerProcess(stream_env, tmp_path / "w.log")
    try:
        wait_until(lambda: _count(warehouse, "cases") == 20)
    finally:
        assert worker.stop() == 0
    assert {r[0] for r in warehouse.query("SELECT case_id FROM cases")} == {
        str(e.event_id) for e in events
    }


def test_sigterm_commits_offsets_so_a_restart_reads_nothing_twice(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
    group_id: str,
) -> None:
    _send(producer, settings, [prediction() for _ in range(50)])
    worker = WorkerProcess(stream_env, tmp_path / "w.log")
    wait_until(lambda: _count(warehouse, "predictions_audit") == 50)
    time.sleep(0.5)
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    consumer = KafkaConsumer(
        bootstrap_servers=settings.broker.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
    )
    topic = settings.topic(PREDICTIONS)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    committed = sum(consumer.committed(tp) or 0 for tp in parts)
    consumer.close()
    assert committed == 50


def test_a_sink_that_keeps_failing_exits_the_worker_without_losing_events(
    settings: Settings,
    producer: KafkaProducer,
    stream_env: dict[str, str],
    tmp_path: Path,
    warehouse: Warehouse,
) -> None:
    from tutorloop.streams.worker import EXIT_SINK_FAILED

    events = [prediction() for _ in range(30)]
    _send(producer, settings, events)
    broken = tmp_path / "not-a-file.duckdb"
    broken.mkdir()  # DuckDB cannot open a directory: every batch fails
    worker = WorkerProcess(
        stream_env, tmp_path / "broken.log", TUTORLOOP_WAREHOUSE__PATH=str(broken)
    )
    assert worker.proc.wait(timeout=90) == EXIT_SINK_FAILED
    assert "exiting with code" in worker.output()
    worker.stop()
    # Nothing was committed: a healthy worker in the same group stores every event.
    healthy = WorkerProcess(stream_env, tmp_path / "healthy.log")
    try:
        wait_until(lambda: _count(warehouse, "predictions_audit") == 30)
    finally:
        assert healthy.stop() == 0
