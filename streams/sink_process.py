"""Where a worker's sink runs: in the worker's interpreter, or in a process of its own.

The sink (pydantic validation, capture policy, scrubbing, Arrow rows, one transaction) costs
~60 µs an event; in the worker's interpreter it shares the GIL with faust's event loop, so
consuming and storing take turns. :class:`SinkProcess` runs the same sink in a child process
fed the raw record bytes, so faust keeps fetching while a batch is stored
(``streams.sink_process``; BENCHMARKS.md has the measurement). Delivery is unchanged: the agent
acks a batch only after the child returns its outcome, and an exception in the child is
raised in the worker, where the retry rules apply as before. Poison isolation (bisecting a
failing batch) runs in the child, next to the sink, so that a batch crosses the process
boundary once; the records cross as three plain lists, which pickle in C.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.privacy.scrubber import Scrubber
from tutorloop.privacy.scrubbing import configured_scrubber
from tutorloop.streams.batch import BatchOutcome, RawRecord
from tutorloop.streams.fetch import KafkaRecordFetcher
from tutorloop.streams.isolation import Isolator
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink import CaptureSink


def default_scrubber(settings: Settings) -> Scrubber:
    """The scrubber configured in ``privacy.scrubber`` (loaded once per worker)."""
    return configured_scrubber(settings.privacy)


def build_sink(settings: Settings, bootstrap: str, scrubber: Scrubber | None = None) -> CaptureSink:
    """The sink a worker (or a dead-letter replay) writes through, with its Kafka readers."""
    predictions_name = settings.topic(PREDICTIONS)
    return CaptureSink(
        open_warehouse(settings),
        CapturePolicy.from_settings(settings.capture),
        scrubber or default_scrubber(settings),
        predictions_topic=predictions_name,
        escalations_topic=settings.topic(ESCALATIONS),
        fetcher=KafkaRecordFetcher(bootstrap, predictions_name),
        escalation_fetcher=KafkaRecordFetcher(bootstrap, settings.topic(ESCALATIONS)),
        unknown_fields=settings.streams.unknown_fields,
        retention_hours=settings.streams.retention_hours,
    )


class SinkProcess:
    """The sink of :func:`build_sink`, run in one child process (spawned, so that no thread
    or socket of the worker is inherited): batches go through :meth:`write_isolated`."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.predictions_topic = settings.topic(PREDICTIONS)
        self.escalations_topic = settings.topic(ESCALATIONS)
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(settings, bootstrap),
        )
        self._pool.submit(_call, "ready").result()  # fail at start-up, not on the first batch

    async def write_isolated(
        self, method: str, source_topic: str, records: Sequence[RawRecord]
    ) -> BatchOutcome:
        """``method``'s write through the child's :class:`Isolator` for ``source_topic``,
        awaited without a thread of the worker's."""
        columns = (
            [r.value for r in records],
            [r.partition for r in records],
            [r.offset for r in records],
        )
        future = self._pool.submit(_write_isolated, method, source_topic, *columns)
        outcome: BatchOutcome = await asyncio.wrap_future(future)
        return outcome

    def retry_parked(self) -> BatchOutcome:
        return self._run("retry_parked")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, method: str, *args: Any) -> BatchOutcome:
        outcome: BatchOutcome = self._pool.submit(_call, method, *args).result()
        return outcome


_CHILD_SINK: CaptureSink | None = None
_CHILD_ISOLATORS: dict[str, Isolator] = {}  # by source topic: each remembers its own failures


def _start_child(settings: Settings, bootstrap: str) -> None:
    global _CHILD_SINK
    _CHILD_SINK = build_sink(settings, bootstrap)


def _call(method: str, *args: Any) -> Any:
    if method == "ready":
        return None
    return getattr(_CHILD_SINK, method)(*args)


def _write_isolated(
    method: str, source_topic: str, values: list[bytes], partitions: list[int], offsets: list[int]
) -> BatchOutcome:
    isolator = _CHILD_ISOLATORS.setdefault(source_topic, Isolator(source_topic))
    records = [RawRecord(v, p, o) for v, p, o in zip(values, partitions, offsets, strict=True)]
    return isolator.write(getattr(_CHILD_SINK, method), records)
