"""A failed run's stored error never quotes user data: a library's exception message may hold
the text it choked on, so only its type and where it was raised reach the warehouse and log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.test_trainer import _bootstrap, _promote, tiny_settings
from tests.warehouse_cases import capture
from tutorloop.infra.errors import stored_error
from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.loop.cycle import run_cycle
from tutorloop.loop.schedule import Scheduler
from tutorloop.privacy.dp_plan import plan

CANARY = "Zqxcanary"


def _choke(*_: Any, **__: Any) -> Any:
    raise ValueError(f"cannot tokenize 'send {CANARY} my card'")


def test_a_failed_run_and_its_window_store_no_user_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(tmp_path / "d", teacher={"backend": "human"})
    warehouse = open_warehouse(settings)
    _promote(warehouse, _bootstrap(settings))
    texts = [f"{CANARY} lost card {i}" for i in range(12)]
    capture(warehouse, texts, human_labels=dict.fromkeys(range(12), "card_arrival"))
    monkeypatch.setattr("tutorloop.loop.cycle.train_student", _choke)
    with pytest.raises(ValueError):
        run_cycle(settings, warehouse)
    [(error,)] = warehouse.query("SELECT error FROM training_runs WHERE status = 'failed'")
    assert CANARY not in error and error.startswith("ValueError in ")

    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    scheduler = Scheduler(settings, clock=lambda: now, cycle=lambda _stop: _choke())
    with caplog.at_level(logging.INFO):
        failed = scheduler.run_once()
    assert failed is not None and failed["status"] == "failed"
    [(window_error,)] = warehouse.query("SELECT error FROM schedule_runs WHERE status = 'failed'")
    assert CANARY not in window_error and window_error.startswith("ValueError in ")
    assert CANARY not in caplog.text and CANARY not in failed["error"]


def test_a_message_tutorloops_own_code_raised_is_kept() -> None:
    with pytest.raises(ValueError) as ours:
        plan(100, PrivacySettings())  # a ValueError raised by tutorloop, in its own words
    assert stored_error(ours.value).startswith("ValueError: privacy.dp_epsilon is not set")
    with pytest.raises(OSError) as theirs:
        Path("/nonexistent/Zqxcanary").read_text()  # a library's error, naming its input
    assert stored_error(theirs.value) == (
        "FileNotFoundError [No such file or directory] (message not stored: it may quote user data)"
    )
