"""The retrain schedule: a cron window (weekly by default) plus triggers on new labels and, when
``trainer.trigger_on_drift`` is on, on a drift breach serving reported (``drift_windows``).

- **One run per window, across restarts.** Before training, the scheduler claims the window
  in ``schedule_runs`` (insert-if-absent inside a warehouse transaction): a restarted or a
  second scheduler finds the claim and does not train that window again. A window whose run
  failed stays done (no retry storm; ``tutorloop trainer run`` retrains by hand). A window
  missed while the scheduler was down runs once at start-up; on the very first start the
  current window is marked ``installed`` instead, so that installing never trains at once.
- **One trainer at a time.** Training holds an exclusive ``flock`` on
  ``<data_dir>/trainer.lock`` — the scheduler and ``trainer run`` alike.
- **Clean shutdown.** SIGTERM or SIGINT stops the scheduler between checks; during a run, the
  run stops at its next training step, is recorded as failed ("interrupted"), registers
  nothing, and its window is released so that the next start runs it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from tutorloop.infra.errors import TutorloopError, stored_error
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.case_store import labels_added_since
from tutorloop.loop.cycle import run_cycle

log = logging.getLogger(__name__)


class TrainerBusyError(TutorloopError):
    """Another process is training."""


class Interrupted(BaseException):
    """Raised inside a training step when a shutdown was requested."""


@contextmanager
def trainer_lock(settings: Settings) -> Iterator[None]:
    """Hold ``<data_dir>/trainer.lock``; raise :class:`TrainerBusyError` if another holds it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "trainer.lock"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise TrainerBusyError(f"a training run is in progress ({holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def cron_window(cron: str, now: datetime) -> datetime:
    """The start of the cron window ``now`` falls in (the latest scheduled time <= now)."""

    start: datetime = croniter(cron, now).get_prev(datetime)
    return start


def _claim(warehouse: Warehouse, window_id: str, trigger: str, status: str = "running") -> bool:
    with warehouse.transaction() as con:
        rows = con.execute(
            "INSERT INTO schedule_runs (window_id, trigger, claimed_at, status, host, pid)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING window_id",
            [window_id, trigger, datetime.now(UTC), status, socket.gethostname(), os.getpid()],
        ).fetchall()
    return bool(rows)


def _finish(
    warehouse: Warehouse, window_id: str, status: str, version: str | None, error: str | None
) -> None:
    with warehouse.transaction() as con:
        con.execute(
            "UPDATE schedule_runs SET finished_at = ?, status = ?, version = ?, error = ?"
            " WHERE window_id = ?",
            [datetime.now(UTC), status, version, error, window_id],
        )


def _release(warehouse: Warehouse, window_id: str) -> None:
    with warehouse.transaction() as con:
        con.execute("DELETE FROM schedule_runs WHERE window_id = ?", [window_id])


def _labels_since_last_run(warehouse: Warehouse) -> tuple[int, str]:
    row = warehouse.query(
        "SELECT max(claimed_at) FROM schedule_runs WHERE status <> 'skipped'"
        " AND trigger <> 'installed'"
    )
    since = row[0][0] if row and row[0][0] is not None else datetime(1970, 1, 1, tzinfo=UTC)
    return labels_added_since(warehouse, since), since.isoformat()


def _drift_since_last_run(warehouse: Warehouse) -> str | None:
    """The first drift breach serving reported after the last run's claim (ISO time)."""
    row = warehouse.query(
        "SELECT min(window_end) FROM drift_windows WHERE breached AND window_end > coalesce("
        "(SELECT max(claimed_at) FROM schedule_runs WHERE status <> 'skipped'"
        " AND trigger <> 'installed'), TIMESTAMPTZ '1970-01-01 00:00:00+00')"
    )
    return row[0][0].isoformat() if row and row[0][0] is not None else None


class Scheduler:
    """Checks every ``trainer.poll_s`` whether a window is due, and runs it (see the module)."""

    def __init__(
        self,
        settings: Settings,
        *,
        cycle: Callable[[Callable[[], None]], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.warehouse = open_warehouse(settings)
        self._cycle = cycle or self._default_cycle
        self._clock = clock
        self._stop = threading.Event()
        self.runs: list[dict[str, Any]] = []

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Interrupted("shutdown requested")

    def _default_cycle(self, check_stop: Callable[[], None]) -> Any:

        @contextmanager
        def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
            def advance(n: int) -> None:
                check_stop()

            yield advance

        return run_cycle(self.settings, self.warehouse, progress=progress)

    def due(self) -> tuple[str, str] | None:
        """The window to run now as ``(window_id, trigger)``, or ``None``."""
        cfg = self.settings.trainer
        now = self._clock()
        window = cron_window(cfg.schedule_cron, now)
        window_id = f"cron:{window.isoformat()}"
        done = self.warehouse.query("SELECT 1 FROM schedule_runs WHERE window_id = ?", [window_id])
        if not done:
            return window_id, "cron"
        if cfg.trigger_new_labels:
            count, since = _labels_since_last_run(self.warehouse)
            if count >= cfg.trigger_new_labels:
                return f"labels:{since}", "labels"
        if cfg.trigger_on_drift:
            breach = _drift_since_last_run(self.warehouse)
            if breach is not None:
                return f"drift:{breach}", "drift"
        return None

    def run_once(self) -> dict[str, Any] | None:
        """Run the due window, if any; return what happened."""
        due = self.due()
        if due is None:
            return None
        window_id, trigger = due
        try:
            with trainer_lock(self.settings):
                if not _claim(self.warehouse, window_id, trigger):
                    return None  # another scheduler took it
                log.info("retrain for %s started", window_id)
                try:
                    report = self._cycle(self._check_stop)
                except Interrupted:
                    _release(self.warehouse, window_id)
                    raise
                except Exception as exc:
                    message = stored_error(exc)
                    _finish(self.warehouse, window_id, "failed", None, message)
                    log.error("retrain for %s failed: %s", window_id, message)
                    failed: dict[str, Any] = {"window": window_id, "status": "failed"}
                    failed["error"] = message
                    self.runs.append(failed)
                    return failed
        except TrainerBusyError as busy:
            log.info("window %s waits: %s", window_id, busy)
            return None
        version = getattr(report, "version", None)
        _finish(self.warehouse, window_id, "succeeded", version, None)
        log.info("retrain for %s registered %s", window_id, version)
        result: dict[str, Any] = {"window": window_id, "status": "succeeded", "version": version}
        self.runs.append(result)
        return result

    def mark_installed(self) -> None:
        """On the very first start, the current cron window counts as done (see the module)."""
        any_row = self.warehouse.query("SELECT count(*) FROM schedule_runs")
        if any_row[0][0] == 0:
            window = cron_window(self.settings.trainer.schedule_cron, self._clock())
            _claim(self.warehouse, f"cron:{window.isoformat()}", "installed", "skipped")

    def run_forever(self) -> None:
        self.mark_installed()
        log.info(
            "scheduler up: cron %r, trigger after %s new labels, checking every %g s",
            self.settings.trainer.schedule_cron,
            self.settings.trainer.trigger_new_labels or "no",
            self.settings.trainer.poll_s,
        )
        while not self._stop.is_set():
            try:
                self.run_once()
            except Interrupted:
                log.info("run interrupted by shutdown; its window will run at the next start")
                break
            self._stop.wait(self.settings.trainer.poll_s)
        log.info("scheduler stopped")
