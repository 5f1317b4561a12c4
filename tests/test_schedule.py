"""The retrain scheduler: windows, restarts, the trainer lock, the label trigger, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import CLI, wait_until
from tests.test_trainer import _bootstrap, _promote, tiny_env, tiny_settings
from tests.warehouse_cases import capture
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.loop.schedule import Scheduler, trainer_lock

TEST = Path(__file__).parent / "data" / "banking77_test_slice.csv"
MONDAY = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)  # an hour after the weekly window opened


def _with_human_labels(warehouse: Warehouse, n: int, offset: int = 0) -> None:
    rows = read_labeled_csv(TEST)
    texts = rows.texts[offset : offset + n]
    labels = rows.labels[offset : offset + n]
    capture(warehouse, texts, human_labels=dict(enumerate(labels)))


def test_one_run_per_window_across_restarts_and_the_lock(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d", teacher={"backend": "human"})
    warehouse = open_warehouse(settings)
    _promote(warehouse, _bootstrap(settings))
    _with_human_labels(warehouse, 40)
    now = [MONDAY]

    first = Scheduler(settings, clock=lambda: now[0])
    first.mark_installed()  # installing does not train the window already open
    assert first.run_once() is None

    now[0] = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    result = first.run_once()
    assert result == {"window": "cron:2026-12-07T03:00:00+00:00", "status": "succeeded",
                      "version": "v2"}  # fmt: skip
    restarted = Scheduler(settings, clock=lambda: now[0])
    restarted.mark_installed()
    assert restarted.run_once() is None  # same window: not again

    now[0] = datetime(2026, 12, 14, 3, 30, tzinfo=UTC)
    with trainer_lock(settings):
        assert restarted.run_once() is None  # another trainer holds the lock
    assert warehouse.query("SELECT count(*) FROM schedule_runs WHERE window_id LIKE '%12-14%'") == [
        (0,)
    ]
    assert restarted.run_once() is not None
    rows = warehouse.query("SELECT trigger, status FROM schedule_runs ORDER BY claimed_at")
    assert rows == [("installed", "skipped"), ("cron", "succeeded"), ("cron", "succeeded")]


def test_enough_new_labels_trigger_a_run(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d", trainer={"trigger_new_labels": 5})
    warehouse = open_warehouse(settings)
    scheduler = Scheduler(settings, clock=lambda: MONDAY)
    scheduler.mark_installed()
    _with_human_labels(warehouse, 4)
    assert scheduler.due() is None
    _with_human_labels(warehouse, 1, offset=4)
    due = scheduler.due()
    assert due is not None and due[1] == "labels"


def test_sigterm_stops_a_run_cleanly_and_its_window_runs_again(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d", teacher={"backend": "human"})
    warehouse = open_warehouse(settings)
    _promote(warehouse, _bootstrap(settings))
    _with_human_labels(warehouse, 120)
    with warehouse.transaction() as con:  # not the first start: an earlier window exists
        con.execute(
            "INSERT INTO schedule_runs (window_id, trigger, claimed_at, status, host, pid)"
            " VALUES ('cron:2020-01-06T03:00:00+00:00', 'cron', now(), 'succeeded', 'h', 1)"
        )
    env = tiny_env(settings.data_dir) | {
        "TUTORLOOP_TEACHER__BACKEND": "human",
        "TUTORLOOP_TRAINER__EPOCHS": "30",  # long enough to be stopped mid-run
        "TUTORLOOP_TRAINER__POLL_S": "0.5",
    }
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")} | env
    log = (tmp_path / "schedule.log").open("w")
    proc = subprocess.Popen([*CLI, "trainer", "schedule"], env=full_env, stdout=log, stderr=log)
    try:
        wait_until(
            lambda: bool(warehouse.query("SELECT 1 FROM training_runs WHERE status = 'running'")),
            timeout=90,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "schedule.log").read_text()
    assert "interrupted by shutdown" in output, output
    runs = warehouse.query("SELECT status, error FROM training_runs ORDER BY started_at")
    assert runs[-1][0] == "failed" and "Interrupted" in runs[-1][1]
    assert warehouse.query("SELECT count(*) FROM model_versions") == [(1,)]
    assert warehouse.query("SELECT count(*) FROM schedule_runs WHERE status = 'running'") == [
        (0,)
    ]  # the window was released: the next start runs it
    assert not list((settings.models_artifacts_dir / ".staging").glob("*"))
