"""The PostgreSQL warehouse against a real server: the same schema as DuckDB, one migration
history, effectively-once writes from concurrent writers, erasure that leaves no row bytes in
the server's table files, and clear errors for bad settings or an unreachable server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import on_postgres, run_cli
from tests.streams_events import prediction
from tests.warehouse_cases import regex_sink
from tutorloop.infra.local_postgres import LocalPostgres
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.migrations import LATEST_VERSION
from tutorloop.infra.pg_warehouse import PostgresUnavailableError, PostgresWarehouse
from tutorloop.infra.settings import ConfigError, Settings, load_settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.privacy.erasure import forget
from tutorloop.streams.batch import RawRecord

_COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() ORDER BY table_name, column_name"
)


def test_the_same_tables_views_and_columns_as_duckdb(settings: Settings, postgres_url: str) -> None:
    on_pg = open_warehouse(on_postgres(settings, postgres_url))
    assert isinstance(on_pg, PostgresWarehouse)
    duck = open_warehouse(settings)
    assert on_pg.query(_COLUMNS) == duck.query(_COLUMNS)
    assert on_pg.query("SELECT max(version) FROM schema_version") == [(LATEST_VERSION,)]
    # A second process opening it applies nothing again.
    again = PostgresWarehouse(postgres_url)
    assert again.query("SELECT count(*) FROM schema_version") == [(LATEST_VERSION,)]


def test_a_database_migrated_by_a_newer_tutorloop_is_refused(postgres_url: str) -> None:
    wh = PostgresWarehouse(postgres_url)
    with wh.transaction() as con:
        con.execute("INSERT INTO schema_version (version, description) VALUES (?, 'future')",
                    [LATEST_VERSION + 1])  # fmt: skip
    with pytest.raises(Exception, match="upgrade tutorloop"):
        PostgresWarehouse(postgres_url).query("SELECT 1")


def test_concurrent_sinks_store_each_event_once(settings: Settings, postgres_url: str) -> None:
    """Two writers (as two workers during a rebalance) store the same events at once, in
    opposite orders, several times: each event once, and no deadlock between them."""
    wh = open_warehouse(on_postgres(settings, postgres_url))
    errors: list[BaseException] = []

    def write(batch: list[RawRecord]) -> None:
        try:
            regex_sink(wh).write_predictions(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for round_ in range(4):
        events = [prediction(confidence=0.2, user_id=f"u{i}") for i in range(300)]
        records = [RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)]
        threads = [threading.Thread(target=write, args=(batch,))
                   for batch in (records, records[::-1])]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        stored = (300 * (round_ + 1),) * 2
        assert wh.query("SELECT count(*), count(DISTINCT event_id) FROM predictions_audit") == [
            stored
        ]
    assert wh.query("SELECT count(*) FROM cases") == [(1200,)]


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_forget_leaves_no_byte_of_the_text_in_the_table_files(
    settings: Settings, postgres_url: str, postgres_cluster: LocalPostgres
) -> None:
    wh = open_warehouse(on_postgres(settings, postgres_url))
    canary = "Pgcanaryzz wants to close her account"
    events = [prediction(confidence=0.2, user_id="alice", text=f"{canary} {i}") for i in range(3)]
    events.append(prediction(confidence=0.2, user_id="bob", text="Bob stays"))
    regex_sink(wh).write_predictions([RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)])
    wh.query("CHECKPOINT")  # the rows reach the table files
    tables = postgres_cluster.data_dir / "base"
    assert _files_holding(tables, canary.encode())

    report = forget(wh, "alice", tenant_id="acme", actor="dpo", broker_retention_hours=72)
    assert report.cases_deleted == 3
    wh.query("CHECKPOINT")
    assert _files_holding(tables, canary.encode()) == []
    assert wh.query("SELECT user_id FROM cases") == [("bob",)]


def test_settings_refuse_a_password_in_the_url_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, warehouse={"url": "postgresql://tl:s3cr3tpw@db/x"})
    assert "password_env" in str(caught.value) and "s3cr3tpw" not in str(caught.value)
    with pytest.raises(ConfigError, match="postgresql://"):
        load_settings(data_dir=tmp_path, warehouse={"url": "mysql://db/x"})
    with pytest.raises(ConfigError, match="environment variable"):
        load_settings(data_dir=tmp_path, warehouse={"url": "postgresql://db/x",
                                                    "password_env": "not a name"})  # fmt: skip


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://tl@127.0.0.1:{free_port()}/x"
    wh: Warehouse = PostgresWarehouse(url, timeout_s=2)
    with pytest.raises(PostgresUnavailableError, match="cannot reach the PostgreSQL warehouse"):
        wh.query("SELECT 1")
    done = run_cli("warehouse", "status", env={"TUTORLOOP_DATA_DIR": str(tmp_path),
                                               "TUTORLOOP_WAREHOUSE__URL": url})  # fmt: skip
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot reach the PostgreSQL warehouse" in done.stderr


@pytest.mark.slow
def test_two_worker_hosts_share_one_warehouse_and_lose_nothing_to_a_kill_9(
    settings: Settings, postgres_url: str, group_id: str, tmp_path: Path
) -> None:
    """Two stream workers as two hosts (their own data dirs, one consumer group, one broker)
    write one PostgreSQL warehouse; one is killed with SIGKILL mid-stream and replaced. Every
    event is stored exactly once."""
    import signal

    from kafka import KafkaProducer

    from tests.conftest import WorkerProcess, make_stream_env, wait_until
    from tutorloop.infra.topics import PREDICTIONS, ensure_topics

    shared = on_postgres(settings, postgres_url)
    wh = open_warehouse(shared)
    ensure_topics(settings, settings.broker.bootstrap_servers)

    def host_env(name: str) -> dict[str, str]:
        host = settings.model_copy(update={"data_dir": tmp_path / name})
        return make_stream_env(host, group_id) | {
            "TUTORLOOP_WAREHOUSE__URL": postgres_url,
            "TUTORLOOP_STREAMS__BATCH_MAX": "50",
        }

    def stored() -> int:
        return int(wh.query("SELECT count(*) FROM predictions_audit")[0][0])

    workers = [WorkerProcess(host_env(f"host{i}"), tmp_path / f"w{i}.log") for i in range(2)]
    total = 3000
    events = [prediction(confidence=0.3 if i % 7 == 0 else 0.97, user_id=f"u-{i}")
              for i in range(total)]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.broker.bootstrap_servers, linger_ms=5)
    try:
        for w in workers:
            w.wait_ready()
        for e in events:
            producer.send(settings.topic(PREDICTIONS), key=e.key, value=e.to_bytes())
        producer.flush()
        wait_until(lambda: stored() >= 300, interval=0.05, timeout=120)
        workers[0].stop(signal.SIGKILL)
        assert stored() < total, "the worker must die mid-stream"
        workers[0] = WorkerProcess(host_env("host2"), tmp_path / "w2.log")
        wait_until(lambda: stored() == total, timeout=180)
        time.sleep(1.5)  # anything still in flight would show up as a duplicate by now
    finally:
        producer.close()
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert wh.query("SELECT count(*), count(DISTINCT event_id) FROM predictions_audit") == [
        (total, total)
    ]
    # The workers' policy (make_stream_env: 5% audit sample) decides which became cases.
    from tutorloop.infra.settings_sections import CaptureSettings
    from tutorloop.streams.policy import CapturePolicy

    policy = CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0.05))
    expected = sum(1 for e in events if e.consent.training and policy.reason(e) is not None)
    assert wh.query("SELECT count(*) FROM cases") == [(expected,)]


def test_warehouse_status_names_the_database_and_counts_its_rows(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path), "TUTORLOOP_WAREHOUSE__URL": postgres_url}
    done = run_cli("warehouse", "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    import json

    status = json.loads(done.stdout)
    assert status["location"] == postgres_url and status["schema_version"] == LATEST_VERSION
    assert status["rows"]["predictions_audit"] == 0 and "schema_version" in status["rows"]
