"""DuckDB admits one writing process at a time; the connection helper makes them take turns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
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


def _ticket(path: Path, process: str, age_s: float) -> Path:
    """A waiter's ticket that started before now, last renewed ``age_s`` ago."""
    waiters = path.with_name(path.name + ".waiters")
    waiters.mkdir(exist_ok=True)
    ticket = waiters / f"{time.time_ns() - 10**10}-{process}-1"
    ticket.touch()
    renewed = time.time() - age_s
    os.utime(ticket, (renewed, renewed))
    return ticket


def test_a_ticket_nobody_renews_does_not_block_even_if_its_pid_lives(path: Path) -> None:
    # PID 1 exists in every namespace: a PID check kept such a ticket alive forever.
    ticket = _ticket(path, "1", age_s=30)
    started = time.monotonic()
    assert Warehouse(path, lock_timeout_s=2).query("SELECT 1") == [(1,)]
    assert time.monotonic() - started < 1.5
    assert not ticket.exists()


def test_an_earlier_waiter_that_renews_its_ticket_goes_first(path: Path) -> None:
    ticket = _ticket(path, "elsewhere", age_s=0)

    def renew_then_leave() -> None:
        for _ in range(6):
            ticket.touch()
            time.sleep(0.2)
        ticket.unlink()

    waiter = threading.Thread(target=renew_then_leave)
    waiter.start()
    started = time.monotonic()
    assert Warehouse(path, lock_timeout_s=10).query("SELECT 1") == [(1,)]
    waited = time.monotonic() - started
    waiter.join()
    assert waited >= 1.0  # it stepped aside while the lease was renewed


def test_writers_in_separate_pid_namespaces_share_the_warehouse(path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")
    command = [sys.executable, "-m", "tests.warehouse_writer", str(path), "rows", "40"]
    procs = [
        subprocess.Popen(["unshare", "--pid", "--fork", *command], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    # Both are PID 1 in their namespace: the rows of both are there.
    assert Warehouse(path).query("SELECT count(*) FROM erasures") == [(80,)]
    assert not list(path.with_name(path.name + ".waiters").glob("*"))
