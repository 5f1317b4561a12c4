"""Shared fixtures: one real tansu broker per test session; per test its own topics, group ids
and DuckDB file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings, load_settings
from infra.warehouse import Warehouse

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "infra"]


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


@pytest.fixture
def settings(tmp_path: Path, broker_bootstrap: str) -> Settings:
    """Settings for one test: its own data dir, DuckDB file and topic prefix.

    The session broker is configured as external Kafka, the way a deployment points tutorloop
    at an existing cluster.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    return load_settings(
        data_dir=tmp_path / "data",
        broker={"bootstrap_servers": broker_bootstrap, "topic_prefix": prefix},
        warehouse={"lock_timeout_s": 20.0},
    )


@pytest.fixture
def warehouse(settings: Settings) -> Warehouse:
    return Warehouse.from_settings(settings)


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
