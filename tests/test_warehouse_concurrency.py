"""DuckDB admits one writing process at a time; the connection helper makes them take turns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tutorloop.infra.warehouse import Warehouse, WarehouseBusyError


def _spawn(path: Path, mode: str, arg: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.warehouse_writer", str(path), mode, str(arg)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert word in line, (line, proc.stderr.read() if proc.stderr else "")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "w.duckdb"
    with Warehouse(p).connect():  # create and migrate up front
        pass
    return p


def test_two_processes_writing_concurrently_both_succeed(path: Path) -> None:
    procs = [_spawn(path, "rows", 60) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    rows = Warehouse(path).query("SELECT user_id, count(*) FROM erasures GROUP BY 1")
    assert sorted(count for _, count in rows) == [60, 60]


def test_reader_started_while_writer_works_waits_and_succeeds(path: Path) -> None:
    writer = _spawn(path, "hold", 1.5)
    _wait_for(writer, "holding")
    started = time.monotonic()
    rows = Warehouse(path, lock_timeout_s=20).query("SELECT count(*) FROM erasures")
    waited = time.monotonic() - started
    writer.communicate(timeout=30)
    assert writer.returncode == 0
    assert waited > 0.5  # it really had to wait for the writer...
    assert rows == [(1,)]  # ...and saw its committed row


def test_continuous_writer_never_fails_a_short_cli_command(path: Path) -> None:
    writer = _spawn(path, "loop", 8)
    _wait_for(writer, "looping")
    env = {"TUTORLOOP_WAREHOUSE__PATH": str(path), "TUTORLOOP_WAREHOUSE__LOCK_TIMEOUT_S": "10"}
    results = [run_cli("warehouse", "status", "--json", env=env) for _ in range(3)]
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    for result in results:
        assert result.returncode == 0, result.stderr
        assert '"schema_version"' in result.stdout
    written = int(out.split("wrote ")[1])
    assert written > 30  # the writer kept writing the whole time


def test_lock_held_past_timeout_fails_with_clear_message(path: Path) -> None:
    writer = _spawn(path, "hold", 4)
    _wait_for(writer, "holding")
    started = time.monotonic()
    with pytest.raises(WarehouseBusyError) as info:
        Warehouse(path, lock_timeout_s=0.6).query("SELECT 1")
    elapsed = time.monotonic() - started
    writer.kill()
    writer.communicate()
    assert 0.5 < elapsed < 3
    message = str(info.value)
    assert f"PID {writer.pid}" in message
    assert "lock_timeout_s" in message
