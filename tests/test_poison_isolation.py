"""Poison-record isolation on a real DuckDB file: a valid event that breaks the sink alone is
dead-lettered with its reason, everything else in its batch is stored; a sink that fails on
every record is a systemic failure, not a reason to empty the topic into the DLQ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.conftest import read_topic, wait_until
from tests.poison_scrubber import MARKER, BreaksOnMarker, poisoned_worker
from tests.streams_events import prediction
from tests.warehouse_cases import regex_sink
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import PREDICTIONS, PREDICTIONS_DLQ, ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.streams.batch import BatchOutcome, RawRecord
from tutorloop.streams.isolation import Isolator, SystemicSinkError
from tutorloop.streams.sink import CaptureSink


def _sink(warehouse: Warehouse) -> CaptureSink:
    return regex_sink(warehouse, BreaksOnMarker())


def _records(texts: list[str]) -> list[RawRecord]:
    events = [prediction(confidence=0.2, text=t, user_id=f"u{i}") for i, t in enumerate(texts)]
    return [RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)]


def test_records_that_fail_alone_are_dead_lettered_and_the_rest_is_stored(
    warehouse: Warehouse,
) -> None:
    texts = [f"my card {i} is lost, Alice Quince" for i in range(40)]
    texts[7] = f"card blocked {MARKER} Alice Quince"
    texts[31] = f"{MARKER} where is my transfer, Alice Quince"
    sink, records = _sink(warehouse), _records(texts)
    outcome = Isolator("p").write(sink.write_predictions, records)
    assert warehouse.query("SELECT count(*) FROM predictions_audit") == [(38,)]
    assert warehouse.query("SELECT count(*) FROM cases") == [(38,)]
    assert outcome.consumed == 40 and outcome.audited == 38
    assert [(d.source_topic, d.offset) for d in outcome.dead_letters] == [("p", 7), ("p", 31)]
    for letter in outcome.dead_letters:
        assert letter.reason.startswith("sink failed on this record alone: UnicodeError")
        assert letter.event_id is not None
        # The exception quoted the text: its message is withheld, never copied.
        assert "Quince" not in letter.to_bytes().decode() and "poison" not in letter.reason
    # Rewriting the same batch (a redelivery) stores nothing twice and isolates the same two.
    again = Isolator("p").write(sink.write_predictions, records)
    assert again.duplicates == 38 and len(again.dead_letters) == 2


def test_a_sink_that_fails_every_record_is_a_systemic_failure(warehouse: Warehouse) -> None:
    calls: list[int] = []

    def broken(records: Sequence[RawRecord]) -> BatchOutcome:
        calls.append(len(records))
        raise OSError("disk full")

    with pytest.raises(SystemicSinkError, match="disk full"):
        Isolator("p", max_lonely_failures=4).write(broken, _records(["a"] * 64))
    assert len(calls) < 30  # gave up early instead of writing all 64 records alone


def test_lonely_failures_are_counted_across_batches_until_a_write_succeeds(
    warehouse: Warehouse,
) -> None:
    isolator = Isolator("p", max_lonely_failures=3)
    sink = _sink(warehouse)
    # Two poisoned single-record batches, then a healthy one: the count starts over.
    for _ in range(2):
        assert len(isolator.write(sink.write_predictions, _records([MARKER])).dead_letters) == 1
    isolator.write(sink.write_predictions, _records(["fine text"]))
    for _ in range(2):
        isolator.write(sink.write_predictions, _records([MARKER]))
    with pytest.raises(SystemicSinkError):
        isolator.write(sink.write_predictions, _records([MARKER]))


def test_a_worker_dead_letters_a_poison_record_and_keeps_going(
    settings: Settings, stream_env: dict[str, str], tmp_path: Path, warehouse: Warehouse
) -> None:
    # The scrubber plugin setting loads the buggy scrubber into a real worker subprocess.
    ensure_topics(settings, settings.broker.bootstrap_servers)
    texts = [f"where is my card {i}" for i in range(30)]
    texts[4] = texts[22] = f"card {MARKER} blocked"
    producer = KafkaProducer(bootstrap_servers=settings.broker.bootstrap_servers)
    for record in _records(texts):
        producer.send(settings.topic(PREDICTIONS), value=record.value)
    producer.flush()
    producer.close()
    worker = poisoned_worker(stream_env, tmp_path / "w.log")
    try:
        wait_until(lambda: warehouse.query("SELECT count(*) FROM cases") == [(28,)], 120)
        letters = read_topic(settings.broker.bootstrap_servers,
                             settings.topic(PREDICTIONS_DLQ), expected=2)  # fmt: skip
        reasons = [json.loads(v)["reason"] for v in letters]
        assert all("sink failed on this record alone: UnicodeError" in r for r in reasons)
        assert worker.proc.poll() is None  # never exited, never restarted
        assert "exiting with code" not in worker.output()
    finally:
        assert worker.stop() == 0


def test_the_scrubber_setting_loads_a_plugin_or_says_why_not() -> None:
    from tutorloop.infra.settings import ConfigError, load_settings
    from tutorloop.privacy.scrubbing import ScrubberLoadError, configured_scrubber

    plugin = load_settings(privacy={"scrubber": "tests.poison_scrubber:BreaksOnMarker"})
    assert isinstance(configured_scrubber(plugin.privacy), BreaksOnMarker)
    missing = load_settings(privacy={"scrubber": "tests.poison_scrubber:Nope"})
    with pytest.raises(ScrubberLoadError, match="cannot be loaded"):
        configured_scrubber(missing.privacy)
    not_one = load_settings(privacy={"scrubber": "tests.poison_scrubber:MARKER"})
    with pytest.raises(ScrubberLoadError, match=r"cannot be loaded|not a scrubber"):
        configured_scrubber(not_one.privacy)
    with pytest.raises(ConfigError, match=r"privacy\.scrubber"):
        load_settings(privacy={"scrubber": "spacy please"})


def test_a_busy_warehouse_is_retried_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from tutorloop.infra.warehouse import WarehouseBusyError
    from tutorloop.streams.metrics import StreamMetrics
    from tutorloop.streams.worker import _in_thread, _write_with_retry

    calls: list[int] = []

    def busy_twice(records: Sequence[RawRecord]) -> BatchOutcome:
        calls.append(len(records))
        if len(calls) <= 2:
            raise WarehouseBusyError("warehouse locked by pid 1 (ticket stale in 3s)")
        return BatchOutcome(consumed=len(records), audited=len(records))

    metrics = StreamMetrics()
    with caplog.at_level("WARNING", logger="tutorloop.streams.worker"):
        outcome = asyncio.run(
            _write_with_retry(
                "predictions", _in_thread(busy_twice, "p"), _records(["a", "b"]), metrics
            )
        )
    assert outcome.audited == 2 and calls == [2, 2, 2]  # never split, never dead-lettered
    assert metrics.totals()["transient_retries"] == 2
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 1


def test_the_next_batch_is_taken_while_one_is_written_and_acks_follow_each_write() -> None:
    # The agents' loop on a stream of three batches and a slow sink: the stream is asked for
    # the second batch before the first write ends, writes stay one at a time and in order,
    # and no event is acked before its own batch is written.
    import asyncio
    from types import SimpleNamespace

    from tutorloop.infra.settings_sections import StreamsSettings
    from tutorloop.streams.metrics import StreamMetrics
    from tutorloop.streams.worker import _batch_runner

    log: list[str] = []

    def event(offset: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(value=b"{}", partition=0, offset=offset))

    class Stream:
        async def noack_take(self, n: int, within: float):  # type: ignore[no-untyped-def]
            for first in (0, 2, 4):
                log.append(f"take {first}")
                yield [event(first), event(first + 1)]
                await asyncio.sleep(0)
            # The stream stays open while the writer drains (a slow machine only waits longer).
            for _ in range(1000):
                if sum(line.startswith("ack") for line in log) == 6:
                    break
                await asyncio.sleep(0.01)

        async def ack(self, e: SimpleNamespace) -> None:
            log.append(f"ack {e.message.offset}")

    async def slow_write(records: list[RawRecord]) -> BatchOutcome:
        log.append(f"write {records[0].offset} begins")
        await asyncio.sleep(0.2)
        log.append(f"write {records[0].offset} ends")
        return BatchOutcome(consumed=len(records), audited=len(records))

    run = _batch_runner(None, StreamsSettings(), StreamMetrics(), None)  # type: ignore[arg-type]
    asyncio.run(run("predictions", Stream(), slow_write))
    assert log.index("take 2") < log.index("write 0 ends")  # taking overlapped the write
    writes = [line for line in log if line.startswith("write")]
    assert writes == [f"write {o} {w}" for o in (0, 2, 4) for w in ("begins", "ends")]
    for offset in range(6):
        assert log.index(f"ack {offset}") > log.index(f"write {offset - offset % 2} ends")
