"""Shared fixtures: one real tansu broker per test session; per test its own topics, group ids
and DuckDB file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.local_postgres import LocalPostgres
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse

# No model hub here: models load from PyPI-shipped folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tutorloop"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own config or TUTORLOOP_* variables."""
    for name in list(os.environ):
        if name.startswith("TUTORLOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def broker_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tansu broker (memory storage) for the whole session."""
    data_dir = tmp_path_factory.mktemp("session-broker")
    settings = load_settings(data_dir=data_dir, broker={"port": free_port()})
    broker = EmbeddedBroker(settings)
    state = broker.up()
    try:
        yield state.bootstrap_servers
    finally:
        broker.down()


def make_settings(data_dir: Path, bootstrap: str) -> Settings:
    """Settings with their own data dir, DuckDB file and topic prefix.

    The session broker is configured as external Kafka, the way a deployment points tutorloop
    at an existing cluster.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    return load_settings(
        data_dir=data_dir,
        broker={"bootstrap_servers": bootstrap, "topic_prefix": prefix},
        warehouse={"lock_timeout_s": 20.0},
    )


@pytest.fixture
def settings(tmp_path: Path, broker_bootstrap: str) -> Settings:
    """Settings for one test (see :func:`make_settings`)."""
    return make_settings(tmp_path / "data", broker_bootstrap)


@pytest.fixture
def warehouse(settings: Settings) -> Warehouse:
    return open_warehouse(settings)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the session (the Debian package's binaries)."""
    from tutorloop.infra.local_postgres import start_local_postgres, stop_local_postgres

    # Not under pytest's temp folder: as root, the server runs as `postgres`, which cannot
    # enter root's private folders.
    root = Path(tempfile.mkdtemp(prefix="tutorloop-pg-"))
    server = start_local_postgres(root, fsync=False)
    try:
        yield server
    finally:
        stop_local_postgres(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster: LocalPostgres) -> str:
    """The session's PostgreSQL server URL."""
    return postgres_cluster.url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server, for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


def on_postgres(settings: Settings, url: str | None) -> Settings:
    """``settings`` with their warehouse in the PostgreSQL database ``url`` (None: unchanged)."""
    if url is None:
        return settings
    return settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"url": url})}
    )


def warehouse_env(settings: Settings) -> dict[str, str]:
    """The env a CLI subprocess needs to reach the same warehouse as ``settings``."""
    url = settings.warehouse.url
    return {"TUTORLOOP_WAREHOUSE__URL": url} if url else {}


@pytest.fixture(params=["duckdb", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """Runs a test once per warehouse backend: None (the DuckDB file), then a PostgreSQL URL."""
    return None if request.param == "duckdb" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def any_warehouse(backend_url: str | None, settings: Settings) -> Warehouse:
    """The warehouse on each backend: the DuckDB file, then a PostgreSQL database."""
    return open_warehouse(on_postgres(settings, backend_url))


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``tutorloop`` CLI in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    full_env.update(env or {})
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


# -- stream workers ---------------------------------------------------------------------------


@pytest.fixture
def stream_env(settings: Settings, group_id: str) -> dict[str, str]:
    """Environment for a worker subprocess bound to this test's topics, group and DuckDB."""
    return make_stream_env(settings, group_id)


def make_stream_env(settings: Settings, group_id: str) -> dict[str, str]:
    return {
        "TUTORLOOP_DATA_DIR": str(settings.data_dir),
        "TUTORLOOP_BROKER__BOOTSTRAP_SERVERS": settings.broker.bootstrap_servers,
        "TUTORLOOP_BROKER__TOPIC_PREFIX": settings.broker.topic_prefix,
        "TUTORLOOP_STREAMS__GROUP_ID": group_id,
        # tansu makes a joining member wait session_timeout/2: keep it short in tests.
        "TUTORLOOP_STREAMS__SESSION_TIMEOUT_S": "6",
        "TUTORLOOP_STREAMS__HEARTBEAT_INTERVAL_S": "1",
        "TUTORLOOP_STREAMS__BATCH_WITHIN_S": "0.2",
        "TUTORLOOP_STREAMS__LOG_EVERY_S": "1",
        "TUTORLOOP_CAPTURE__AUDIT_SAMPLE_RATE": "0.05",
        # Most worker tests are about delivery, not NER: the regex scrubber starts instantly.
        # The leak-guard test runs the full (Presidio) scrubber.
        "TUTORLOOP_PRIVACY__SCRUBBER": "regex",
    }


class WorkerProcess:
    """A `tutorloop streams worker` subprocess with its output captured in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, **extra: str) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
        full_env.update(env)
        full_env.update(extra)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [*CLI, "streams", "worker"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Worker ready" in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.output()[-3000:]}")

    def totals(self) -> dict[str, int]:
        """The last periodic counters line the worker logged."""
        lines = [line for line in self.output().splitlines() if "consumed=" in line]
        if not lines:
            return {}
        # The counters line may wrap; read the key=value pairs from the tail of the log.
        tail = self.output()[self.output().rfind("streams:") :]
        pairs = (tok.split("=", 1) for tok in tail.split() if "=" in tok)
        return {k: int(v) for k, v in pairs if v.isdigit()}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
        return code


def wait_until(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def read_topic(
    bootstrap: str, topic: str, *, expected: int | None = None, timeout: float = 20
) -> list[bytes]:
    """Every value on ``topic`` from the beginning: until ``expected`` arrived, or, with no
    count given, until ``timeout`` (used to prove that nothing more is there)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while (expected is None or len(values) < expected) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()
