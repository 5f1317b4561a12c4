"""The one way every package reaches the DuckDB warehouse.

DuckDB lets one process at a time open a file for writing. So connections here are short:
open, do one unit of work, close. A process that finds the file locked retries with jittered
exponential backoff until ``lock_timeout_s``, then fails with a message naming the holder.

Fairness matters because stream workers write all day: a process that keeps reopening the
file right after closing it would win every race against a CLI command polling with backoff.
A waiter therefore leaves a ticket (a small file in ``<warehouse>.waiters/``) and any process
that starts trying later steps aside while an earlier live ticket exists. The earliest waiter
never steps aside, so somebody always makes progress. A ticket is a lease: its waiter touches
it on every retry, and one not touched for ``_LEASE_S`` is stale (its waiter died) and
removed. Liveness is not a PID check: containers sharing a data dir have PID namespaces of
their own, where a PID says nothing (and a reused one kept a dead ticket alive).

Deleted rows stay readable in a DuckDB file's free blocks until they are overwritten, which an
erasure cannot accept. :meth:`Warehouse.compact` rewrites the file without them. To swap files
safely it takes a gate (``<warehouse>.gate``, an flock) exclusively; every connection holds the
same gate shared, so no process has the old file open when it is replaced.

Compaction of a large file takes seconds to minutes, and on-call must not wait for it: work
done inside :meth:`Warehouse.urgent` (``registry rollback``) leaves a ticket in
``<warehouse>.urgent/``; a compaction that sees one interrupts its copy, drops the partial
file, releases the gate, waits until no urgent ticket is left and starts again. Urgent work
also skips the fair queue and polls the locks without backoff.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.migrations import migrate

log = logging.getLogger(__name__)

_LOCK_MARKERS = ("Could not set lock on file", "Conflicting lock is held")
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


class WarehouseBusyError(TutorloopError):
    """The warehouse stayed locked by another process for longer than the timeout."""


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in _LOCK_MARKERS)


def rows_as_dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of an executed statement as dicts keyed by column name."""
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
    """Insert an Arrow table, skipping rows whose key exists; return rows inserted.

    One statement per batch: DuckDB's ``executemany`` manages a few hundred rows a second.
    """
    if rows.num_rows == 0:
        return 0
    copy_arrow = getattr(con, "copy_arrow", None)  # the PostgreSQL warehouse: COPY
    if copy_arrow is not None:
        return int(copy_arrow(table, rows))
    con.register("_batch", rows)
    try:
        cols = ", ".join(rows.column_names)
        result = con.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _batch ON CONFLICT DO NOTHING"
        ).fetchone()
    finally:
        con.unregister("_batch")
    return int(result[0]) if result else 0


# A waiter touches its ticket at least every retry_max_s (0.25 s by default); a ticket not
# touched for this long (or four retry periods, if longer) has lost its waiter.
_LEASE_S = 3.0
# Names this process in tickets: a PID is not unique across PID namespaces.
_PROCESS = uuid.uuid4().hex[:16]


class Warehouse:
    """A DuckDB warehouse file, opened briefly for each unit of work.

    >>> wh = Warehouse(Path("warehouse.duckdb"))
    >>> with wh.transaction() as con:
    ...     con.execute("INSERT INTO some_table ...")
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout_s: float = 30.0,
        retry_initial_s: float = 0.005,
        retry_max_s: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._waiters = self.path.with_name(self.path.name + ".waiters")
        self._gate = self.path.with_name(self.path.name + ".gate")
        self._lease_s = max(_LEASE_S, 4 * retry_max_s)
        self._urgent_dir = self.path.with_name(self.path.name + ".urgent")
        self._urgent = threading.local()
        self._migrated = False
        self._migrate_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the warehouse is, for people: the file, or the database (no password)."""
        return str(self.path)

    @contextlib.contextmanager
    def connect(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (migrating it on first use), yield a connection, close it.

        Keep the block short: while it is open no other process can use the warehouse.
        """
        timeout = self.lock_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        gate = self._enter_gate(fcntl.LOCK_SH, deadline, timeout)
        try:
            con = self._open(max(0.0, deadline - time.monotonic()), timeout)
            try:
                self._ensure_migrated(con)
                yield con
            finally:
                con.close()
        finally:
            os.close(gate)

    @contextlib.contextmanager
    def transaction(self, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside ``BEGIN``/``COMMIT``; any exception rolls back."""
        with self.connect(timeout_s=timeout_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Connections opened inside (this thread) pre-empt a running compaction."""
        if getattr(self._urgent, "ticket", None) is not None:
            yield
            return
        self._urgent_dir.mkdir(parents=True, exist_ok=True)
        ticket = self._urgent_dir / f"{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"
        ticket.touch()
        self._urgent.ticket = ticket
        try:
            yield
        finally:
            self._urgent.ticket = None
            ticket.unlink(missing_ok=True)

    def compact(self, *, timeout_s: float | None = None) -> tuple[int, int]:
        """Rewrite the file without the free blocks that still hold deleted rows.

        Waits until no other connection is open (up to the lock timeout) and blocks new ones
        while it copies, except urgent ones, which interrupt it (it then starts over once they
        are done). Returns the file size before and after, in bytes.
        """
        timeout = self.lock_timeout_s if timeout_s is None else timeout_s
        while True:
            self._wait_while_urgent(timeout)
            done = self._compact_once(timeout)
            if done is not None:
                return done
            log.info("compaction of %s interrupted by urgent work; starting over", self.path)

    def _compact_once(self, timeout: float) -> tuple[int, int] | None:
        """One attempt; None when urgent work interrupted it (nothing changed)."""
        deadline = time.monotonic() + timeout
        gate = self._enter_gate(fcntl.LOCK_EX, deadline, timeout)
        # A name of its own: an interrupted copy is deleted after the gate is released (a big
        # file takes a while to unlink), when another compaction may already have started.
        fresh = self.path.with_name(f"{self.path.name}.compacting-{os.getpid()}-{time.time_ns()}")
        try:
            for stale in self.path.parent.glob(f"{self.path.name}.compacting*"):
                stale.unlink(missing_ok=True)  # a crashed attempt's; only the gate holder copies
            con = self._open(max(0.0, deadline - time.monotonic()), timeout)
            before = self.path.stat().st_size
            if not self._copy_into(con, fresh):
                return None
            # Nobody else holds the file (the gate is ours), so the swap is safe.
            fresh.replace(self.path)
            return before, self.path.stat().st_size
        finally:
            os.close(gate)
            fresh.unlink(missing_ok=True)
            fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)

    def _copy_into(self, con: duckdb.DuckDBPyConnection, fresh: Path) -> bool:
        """Copy the open database into ``fresh``; False when urgent work interrupted it."""
        stop, preempted = threading.Event(), threading.Event()
        watcher = threading.Thread(target=self._interrupt_if_urgent, args=(con, stop, preempted))
        watcher.start()
        try:
            self._ensure_migrated(con)
            con.execute("SET enable_progress_bar = false")
            con.execute("CHECKPOINT")
            row = con.execute("SELECT current_database()").fetchone()
            name = row[0] if row else "main"
            con.execute(f"ATTACH '{fresh}' AS _compacted")
            con.execute(f'COPY FROM DATABASE "{name}" TO _compacted')
            con.execute("DETACH _compacted")
            return not preempted.is_set()  # an interrupt may fall between two statements
        except duckdb.InterruptException:
            return False
        finally:
            stop.set()
            watcher.join()
            con.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and return all rows."""
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()

    def query_dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement and return rows as dicts keyed by column name."""
        with self.connect() as con:
            return rows_as_dicts(con.execute(sql, params or []))

    # -- internals --------------------------------------------------------------------------

    def _urgent_waiting(self) -> bool:
        """A live urgent ticket exists (older ones than the lock timeout are stale: no urgent
        caller waits longer than that)."""
        try:
            entries = list(os.scandir(self._urgent_dir))
        except FileNotFoundError:
            return False
        now = time.time()
        for entry in entries:
            try:
                if now - entry.stat().st_mtime < max(self.lock_timeout_s, 60.0):
                    return True
            except FileNotFoundError:
                continue
        return False

    def _interrupt_if_urgent(
        self, con: duckdb.DuckDBPyConnection, stop: threading.Event, preempted: threading.Event
    ) -> None:
        # Interrupt again on every poll: an interrupt between two statements is lost.
        while not stop.wait(0.02):
            if self._urgent_waiting():
                preempted.set()
                con.interrupt()

    def _wait_while_urgent(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._urgent_waiting():
            if time.monotonic() > deadline:
                raise WarehouseBusyError(
                    f"warehouse {self.path}: urgent work (a rollback) kept compaction waiting "
                    f"for {timeout_s:g}s; the rows are deleted, run the command again to "
                    "compact the file"
                )
            time.sleep(0.05)

    def _poll_s(self, delay: float) -> float:
        """Urgent work polls every 10 ms; the rest backs off with jitter."""
        if getattr(self._urgent, "ticket", None) is not None:
            return 0.01
        return delay * random.uniform(0.5, 1.5)

    def _ensure_migrated(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._migrated:
            return
        with self._migrate_lock:
            if not self._migrated:
                migrate(con, source=f"warehouse {self.path}")
                self._migrated = True

    def _enter_gate(self, mode: int, deadline: float, timeout_s: float) -> int:
        """Take the gate shared (connections) or exclusive (compaction); return its fd."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._gate, os.O_RDWR | os.O_CREAT, 0o644)
        delay = self._retry_initial_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    os.close(fd)
                    raise WarehouseBusyError(self._busy_message(timeout_s, None)) from None
                time.sleep(min(remaining, self._poll_s(delay)))
                delay = min(delay * 2, self._retry_max_s)

    def _open(self, timeout_s: float, reported_timeout_s: float) -> duckdb.DuckDBPyConnection:
        started_wall = time.time_ns()
        deadline = time.monotonic() + timeout_s
        delay = self._retry_initial_s
        ticket: Path | None = None
        last_error: BaseException | None = None
        try:
            while True:
                urgent = getattr(self._urgent, "ticket", None) is not None
                if urgent or not self._earlier_waiter_exists(started_wall):
                    try:
                        return duckdb.connect(str(self.path))
                    except duckdb.Error as exc:
                        if not _is_lock_conflict(exc):
                            raise
                        last_error = exc
                if ticket is None:
                    ticket = self._take_ticket(started_wall)
                else:
                    ticket.touch()  # renew the lease
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WarehouseBusyError(self._busy_message(reported_timeout_s, last_error))
                time.sleep(min(remaining, self._poll_s(delay)))
                delay = min(delay * 2, self._retry_max_s)
        finally:
            if ticket is not None:
                ticket.unlink(missing_ok=True)

    def _take_ticket(self, started_wall: int) -> Path:
        self._waiters.mkdir(parents=True, exist_ok=True)
        ticket = self._waiters / f"{started_wall}-{_PROCESS}-{threading.get_ident()}"
        ticket.touch()
        return ticket

    def _earlier_waiter_exists(self, started_wall: int) -> bool:
        try:
            entries = list(os.scandir(self._waiters))
        except FileNotFoundError:
            return False
        now = time.time()
        for entry in entries:
            try:
                ts_text, process, _ = entry.name.split("-", 2)
                ts = int(ts_text)
            except ValueError:
                continue
            # Threads of one process share the open database, so they never block each other.
            if process == _PROCESS or ts >= started_wall:
                continue
            try:
                renewed = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if now - renewed < self._lease_s:
                return True
            Path(entry.path).unlink(missing_ok=True)  # its waiter stopped renewing it
        return False

    def _busy_message(self, timeout_s: float, error: BaseException | None) -> str:
        holder = ""
        if error is not None:
            match = _HOLDER_PID.search(str(error))
            if match:
                holder = f" (held by PID {match.group(1)})"
        return (
            f"warehouse {self.path} stayed locked by another process{holder} for "
            f"{timeout_s:g}s; raise warehouse.lock_timeout_s or stop the long writer"
        )
