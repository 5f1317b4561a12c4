"""Dead-letter replay after a fix, on a real broker, a real worker and a real DuckDB file: a
worker with a buggy scrubber dead-letters two valid records; after the fix, `streams dlq replay`
stores them, leaves the still-invalid letter open with its reason, and a second replay (or a
batch dead-lettered twice) changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.conftest import read_topic, run_cli, wait_until
from tests.poison_scrubber import MARKER, poisoned_worker
from tests.streams_events import escalation, prediction
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS, PREDICTIONS_DLQ, ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.streams.batch import DeadLetter
from tutorloop.streams.dead_letters import DeadLetterError, parse_since, select


def _dlq(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    result = run_cli("streams", "dlq", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, list | dict)
    return parsed if isinstance(parsed, list) else [parsed]


def test_dead_letters_are_replayed_after_the_fix_once_and_only_once(
    settings: Settings, stream_env: dict[str, str], tmp_path: Path, warehouse: Warehouse
) -> None:
    bootstrap = settings.broker.bootstrap_servers
    ensure_topics(settings, bootstrap)
    texts = [f"where is my card {i}" for i in range(12)]
    texts[3] = texts[9] = f"card {MARKER} blocked"
    events = [prediction(confidence=0.2, text=t, user_id=f"u{i}") for i, t in enumerate(texts)]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for event in events:
        producer.send(settings.topic(PREDICTIONS), value=event.to_bytes(), partition=0)
    producer.send(settings.topic(PREDICTIONS), value=b'{"not": "an event"}', partition=0)
    # A human label on a poisoned case: it must land once the case does.
    label = escalation(events[3].request_id, "card_lost")
    producer.send(settings.topic(ESCALATIONS), value=label.to_bytes(), partition=0)
    producer.flush()
    worker = poisoned_worker(stream_env, tmp_path / "w.log")
    try:
        wait_until(lambda: warehouse.query("SELECT count(*) FROM cases") == [(10,)], 120)
        read_topic(bootstrap, settings.topic(PREDICTIONS_DLQ), expected=3)
    finally:
        assert worker.stop() == 0
    assert warehouse.query("SELECT count(*) FROM escalations") == [(1,)]
    assert warehouse.query("SELECT count(*) FROM labels WHERE source = 'human'") == [(0,)]

    # The worker's letters point at their source records and never carry them.
    letters = _dlq(stream_env, "list")
    assert sorted(int(str(x["offset"])) for x in letters) == [3, 9, 12]
    assert all(x["status"] == "open" and "blocked" not in json.dumps(x) for x in letters)
    assert len(_dlq(stream_env, "list", "--reason", "UNICODEERROR")) == 2
    assert _dlq(stream_env, "list", "--since", "1h") == letters
    assert _dlq(stream_env, "list", "--since", "2999-01-01") == []

    # The fix: the default (regex) scrubber. A worker-style redelivery first writes the same
    # letters again: they stay one per source record.
    for raw in read_topic(bootstrap, settings.topic(PREDICTIONS_DLQ), expected=3):
        letter = DeadLetter.from_bytes(raw)
        producer.send(settings.topic(PREDICTIONS_DLQ), key=letter.key, value=raw)
    producer.flush()
    producer.close()
    assert len(_dlq(stream_env, "list")) == 3

    (summary,) = _dlq(stream_env, "replay")
    assert summary["replayed"] == 2 and summary["still_failing"] == 1
    assert summary["cases_captured"] == 2 and summary["human_labels"] == 1
    assert warehouse.query("SELECT count(*) FROM cases") == [(12,)]
    assert warehouse.query("SELECT count(*) FROM labels WHERE source = 'human'") == [(1,)]
    (still_open,) = _dlq(stream_env, "list")
    assert still_open["offset"] == 12 and "event_id" in str(still_open["reason"])
    states = {int(str(x["offset"])): x["status"] for x in _dlq(stream_env, "list", "--all")}
    assert states == {3: "replayed", 9: "replayed", 12: "open"}

    # Replaying again finds only the letter that still fails, and stores nothing twice.
    (again,) = _dlq(stream_env, "replay")
    assert again["letters"] == 1 and again["replayed"] == 0 and again["still_failing"] == 1
    assert warehouse.query("SELECT count(*) FROM cases") == [(12,)]
    assert warehouse.query("SELECT count(*) FROM predictions_audit") == [(12,)]


def _letter(ts: datetime, reason: str = "UnicodeError", offset: int = 0) -> DeadLetter:
    return DeadLetter("p", 0, offset, None, reason, "sha", 1, ts.isoformat())


def test_letters_are_chosen_by_reason_and_time_and_bad_input_is_refused() -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    old, new = _letter(now - timedelta(days=2)), _letter(now, "schema_version", 1)
    assert select([old, new], reason="Schema") == [new]
    assert select([old, new], since=parse_since("24h", now)) == [new]
    assert select([old, new], since=parse_since("2026-11-30")) == [old, new]
    assert parse_since("2026-12-01T10:00").tzinfo is not None
    assert select([old, new], status="replayed") == []
    with pytest.raises(DeadLetterError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_the_dlq_commands_fail_in_one_line_on_a_bad_option(stream_env: dict[str, str]) -> None:
    result = run_cli("streams", "dlq", "list", "--since", "soon", env=stream_env)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "--since 'soon'" in result.stderr
