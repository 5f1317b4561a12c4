"""The embedded broker's lifecycle through the real CLI and the Python API."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import run_cli
from tutorloop.infra.broker import BrokerError, EmbeddedBroker, bootstrap_servers
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.topics import (
    TOPICS,
    ensure_topics,
    list_topics,
    partition_counts,
    retention_ms,
)
from tutorloop.infra.warehouse_backends import open_warehouse


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        "TUTORLOOP_DATA_DIR": str(tmp_path / "data"),
        "TUTORLOOP_BROKER__PORT": str(free_port()),
    }
    yield env
    run_cli("broker", "down", env=env)


def test_up_status_down_through_the_cli(cli_env: dict[str, str]) -> None:
    up = run_cli("broker", "up", env=cli_env)
    assert up.returncode == 0, up.stderr
    assert f"127.0.0.1:{cli_env['TUTORLOOP_BROKER__PORT']}" in up.stdout

    status = run_cli("broker", "status", "--json", env=cli_env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["running"] is True
    assert set(TOPICS) <= set(info["topics"])
    os.kill(info["pid"], 0)  # the recorded pid is a live process

    again = run_cli("broker", "up", env=cli_env)
    assert again.returncode == 1
    assert "already running" in again.stderr

    down = run_cli("broker", "down", env=cli_env)
    assert down.returncode == 0
    assert "stopped" in down.stdout
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(info["pid"], 0)
            time.sleep(0.05)

    after = run_cli("broker", "status", env=cli_env)
    assert after.returncode == 1
    assert "not running" in after.stderr
    assert run_cli("broker", "down", env=cli_env).returncode == 0  # idempotent


def test_taken_port_falls_back_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        settings = load_settings(data_dir=tmp_path, broker={"port": taken})
        broker = EmbeddedBroker(settings)
        try:
            state = broker.up()
            assert state.port != taken
            assert bootstrap_servers(settings) == f"127.0.0.1:{state.port}"
        finally:
            broker.down()


def test_stale_state_file_is_ignored(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker={"port": free_port()})
    broker = EmbeddedBroker(settings)
    broker.dir.mkdir(parents=True)
    broker.state_file.write_text(
        json.dumps(
            {
                "pid": 999_999,
                "port": 1,
                "storage": "memory",
                "started_at": 0,
                "log_file": "x",
                "s3": None,
            }
        )
    )
    assert broker.status().running is False
    assert not broker.state_file.exists()
    with pytest.raises(BrokerError, match="not running"):
        bootstrap_servers(settings)


def test_external_kafka_starts_nothing(tmp_path: Path, broker_bootstrap: str) -> None:
    env = {
        "TUTORLOOP_DATA_DIR": str(tmp_path),
        "TUTORLOOP_BROKER__BOOTSTRAP_SERVERS": broker_bootstrap,
    }
    up = run_cli("broker", "up", env=env)
    assert up.returncode == 1
    assert "external Kafka is configured" in up.stderr
    status = run_cli("broker", "status", "--json", env=env)
    assert json.loads(status.stdout)["external"] is True
    topics = run_cli(
        "broker", "topics", "--json", env={**env, "TUTORLOOP_BROKER__TOPIC_PREFIX": "ext-"}
    )
    assert topics.returncode == 0, topics.stderr
    assert set(json.loads(topics.stdout)) == {f"ext-{t}" for t in TOPICS}


def test_topic_bootstrap_is_idempotent_and_uses_partitions(
    settings: Settings, broker_bootstrap: str
) -> None:
    first = ensure_topics(settings, broker_bootstrap, partitions=4)
    assert all(first.values()) and len(first) == 3
    second = ensure_topics(settings, broker_bootstrap, partitions=4)
    assert not any(second.values())
    names = [settings.topic(t) for t in TOPICS]
    assert set(names) <= list_topics(broker_bootstrap)
    assert partition_counts(broker_bootstrap, names) == dict.fromkeys(names, 4)
    # The topics above were created with retention.ms (tansu accepts the config but does not
    # describe topic configs back, so only the conversion is checked here).
    assert retention_ms(settings.model_copy(update={"streams": settings.streams.model_copy(
        update={"retention_hours": 2.5})})) == 9_000_000  # fmt: skip


def test_a_topic_probe_gives_up_within_its_timeout_on_a_silent_listener() -> None:
    """A listener that accepts TCP and never answers (a broker still starting): the probe that
    `broker up` repeats must fail within its own timeout, not kafka-python's 30 s bootstrap
    wait, or one probe would eat the whole start window."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="bootstrap"):
            list_topics(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=1.0)
        assert time.monotonic() - started < 10
    finally:
        listener.close()


@pytest.mark.slow
def test_durable_mode_keeps_topics_messages_and_offsets_across_restart(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        broker={"port": free_port(), "storage": "s3", "s3_port": free_port(with_offset=10000)},
    )
    broker = EmbeddedBroker(settings)
    topic, group = f"durable-{uuid.uuid4().hex[:6]}", "durable-group"
    try:
        state = broker.up()
        ensure_topics(settings, state.bootstrap_servers, [topic], partitions=1)
        producer = KafkaProducer(bootstrap_servers=state.bootstrap_servers, acks="all")
        for i in range(5):
            producer.send(topic, value=f"m{i}".encode()).get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(
            bootstrap_servers=state.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(3, "", -1)})
        consumer.close()
        assert broker.down()

        state = broker.up()
        assert topic in list_topics(state.bootstrap_servers)
        consumer = KafkaConsumer(
            bootstrap_servers=state.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumer.assign([tp])
        assert consumer.committed(tp) == 3
        consumer.seek(tp, 0)
        seen: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(seen) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend(r.value for r in records)
        consumer.close()
        assert seen == [f"m{i}".encode() for i in range(5)]
    finally:
        broker.down()


def test_the_default_embedded_broker_loses_no_event_across_a_restart(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """No storage setting: a worker stores part of the stream and stops, more events arrive
    that nobody consumed, the broker restarts; a worker then stores every event exactly once."""
    from tests.conftest import WorkerProcess, wait_until
    from tests.streams_events import prediction

    env = {
        **cli_env,
        "TUTORLOOP_STREAMS__GROUP_ID": f"restart-{uuid.uuid4().hex[:6]}",
        "TUTORLOOP_STREAMS__SESSION_TIMEOUT_S": "6",
        "TUTORLOOP_STREAMS__HEARTBEAT_INTERVAL_S": "1",
        "TUTORLOOP_STREAMS__BATCH_WITHIN_S": "0.2",
        "TUTORLOOP_PRIVACY__SCRUBBER": "regex",
    }
    assert run_cli("broker", "up", env=env).returncode == 0
    settings = load_settings(data_dir=Path(env["TUTORLOOP_DATA_DIR"]))
    assert EmbeddedBroker(settings).state().storage == "s3"  # type: ignore[union-attr]
    warehouse = open_warehouse(settings)

    def produce(n: int) -> set[str]:
        producer = KafkaProducer(bootstrap_servers=bootstrap_servers(settings), acks="all")
        events = [prediction(confidence=0.2, text=f"card {i} lost") for i in range(n)]
        for event in events:
            producer.send(settings.topic("predictions"), key=event.key, value=event.to_bytes())
        producer.flush()
        producer.close()
        return {str(event.event_id) for event in events}

    def audited() -> int:
        return int(warehouse.query("SELECT count(*) FROM predictions_audit")[0][0])

    first = produce(40)
    worker = WorkerProcess(env, tmp_path / "w1.log")
    try:
        wait_until(lambda: audited() == 40, 90)
    finally:
        assert worker.stop() == 0
    pending = produce(60)  # nobody consumes these before the restart
    assert run_cli("broker", "down", env=env).returncode == 0
    assert run_cli("broker", "up", env=env).returncode == 0
    worker = WorkerProcess(env, tmp_path / "w2.log")
    try:
        wait_until(lambda: audited() == 100, 90)
    finally:
        assert worker.stop() == 0
    stored = {r[0] for r in warehouse.query("SELECT event_id FROM predictions_audit")}
    assert stored == first | pending and audited() == 100
