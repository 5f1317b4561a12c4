"""The stream worker: a faust-streaming app that captures cases from Kafka into DuckDB.

Delivery: at-least-once from Kafka, effectively-once into the warehouse. Each agent takes a
batch with acks disabled (``noack_take``), writes it in one warehouse transaction (in a
thread, so the event loop keeps heartbeating), publishes its dead letters and waits for the
broker to confirm them, and only then acks the batch's events — so faust never commits an
offset past an event whose rows are not committed. A worker killed at any point re-reads at
most the uncommitted batches, and the sink ignores what it already stored.

Several workers with the same ``streams.group_id`` split the partitions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import faust

from tutorloop.infra.broker import bootstrap_servers
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_sections import StreamsSettings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS, PREDICTIONS_DLQ, ensure_topics
from tutorloop.infra.warehouse import WarehouseBusyError
from tutorloop.privacy.scrubber import Scrubber
from tutorloop.streams.batch import BatchOutcome, RawRecord
from tutorloop.streams.isolation import Isolator
from tutorloop.streams.metrics import StreamMetrics
from tutorloop.streams.sink import CaptureSink
from tutorloop.streams.sink_process import SinkProcess, build_sink

log = logging.getLogger(__name__)


def _faust_app(settings: Settings, bootstrap: str) -> faust.App:
    cfg = settings.streams
    faust_dir = settings.data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        cfg.group_id,
        broker=[f"kafka://{server.strip()}" for server in bootstrap.split(",")],
        # aiokafka's idempotent/transactional producer does not work against every
        # Kafka-compatible broker (tansu); the sink is idempotent instead.
        processing_guarantee="at_least_once",
        web_enabled=False,
        store="memory://",
        datadir=str(faust_dir),
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=cfg.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.broker.partitions,
        topic_replication_factor=1,
        # The stream buffer must hold a whole batch, or take() waits out `within` every time.
        stream_buffer_maxsize=max(4096, cfg.batch_max * 2),
        key_serializer="raw",
        value_serializer="raw",
    )


#: Writes one batch with poison isolation; raises WarehouseBusyError or the sink's failure.
_IsolatedWrite = Callable[[list[RawRecord]], Awaitable[BatchOutcome]]


def _in_thread(write: Callable[[Sequence[RawRecord]], BatchOutcome], source_topic: str
               ) -> _IsolatedWrite:  # fmt: skip
    """An in-process sink's write, isolated and run in a thread (the event loop keeps going)."""
    isolator = Isolator(source_topic)

    async def write_isolated(records: list[RawRecord]) -> BatchOutcome:
        return await asyncio.to_thread(isolator.write, write, records)

    return write_isolated


def _batch_runner(
    app: faust.App, cfg: StreamsSettings, metrics: StreamMetrics, dlq: Any
) -> Callable[[str, Any, _IsolatedWrite], Coroutine[Any, Any, None]]:
    """The agents' loop: take a batch, write it (dead letters to the DLQ), then ack it.

    Taking and writing overlap: while one batch is written (in a thread, or in the sink's own
    process), the next is taken from the stream. Writes stay one at a time and in order, and
    acks follow them, so the delivery rule is unchanged.
    """

    async def write_and_ack(agent: str, stream: Any, pending: asyncio.Queue[Any],
                            write: _IsolatedWrite) -> None:  # fmt: skip
        while True:
            started, events, records = await pending.get()
            outcome = await _write_with_retry(agent, write, records, metrics)
            written = time.perf_counter()
            for letter in outcome.dead_letters:
                await app.producer.send_and_wait(
                    dlq.get_topic_name(), letter.key, letter.to_bytes(), None, None, None
                )
            for event in events:
                await stream.ack(event)
            done = time.perf_counter()
            metrics.record(agent, outcome, done - started)
            log.debug(
                "%s: %d records, queued+sink %.0f ms, dlq+ack %.0f ms",
                agent, len(records), (written - started) * 1e3, (done - written) * 1e3,
            )  # fmt: skip

    async def run_batches(agent: str, stream: Any, write: _IsolatedWrite) -> None:
        pending: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # one written, one waiting
        writer = asyncio.create_task(write_and_ack(agent, stream, pending, write))
        try:
            async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):
                records = [
                    RawRecord(
                        value=bytes(e.message.value or b""),
                        partition=e.message.partition,
                        offset=e.message.offset,
                    )
                    for e in events
                ]
                queued = asyncio.ensure_future(pending.put((time.perf_counter(), events, records)))
                await asyncio.wait({queued, writer}, return_when=asyncio.FIRST_COMPLETED)
                if writer.done():  # the writer never ends by itself: surface its error
                    queued.cancel()
                    writer.result()
                    raise RuntimeError(f"{agent}: the batch writer stopped")
        finally:
            writer.cancel()

    return run_batches


def _add_timers(app: faust.App, cfg: StreamsSettings, metrics: StreamMetrics) -> None:
    @app.timer(interval=cfg.log_every_s)  # type: ignore[untyped-decorator]
    async def log_counters() -> None:
        metrics.log_line()

    @app.timer(interval=max(1.0, cfg.log_every_s / 3))  # type: ignore[untyped-decorator]
    async def track_lag() -> None:
        consumer: Any = app.consumer
        # faust has no public getter for committed offsets; the high watermark comes from
        # fetch responses, so lag is reported only where the broker fills it in.
        committed_offsets = getattr(consumer, "_committed_offset", {})
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            # faust records the offset to read next (Kafka's convention), not the last read.
            position = committed_offsets.get(tp) or 0
            metrics.set_lag(tp.topic, tp.partition, int(highwater) - position)


def build_app(
    settings: Settings,
    *,
    scrubber: Scrubber | None = None,
    metrics: StreamMetrics | None = None,
) -> faust.App:
    """A faust app with the ``predictions`` and ``escalations`` agents wired to the sink."""
    bootstrap = bootstrap_servers(settings)
    ensure_topics(settings, bootstrap)
    metrics = metrics or StreamMetrics()
    sink: CaptureSink | SinkProcess = (
        SinkProcess(settings, bootstrap)
        if settings.streams.sink_process and scrubber is None
        else build_sink(settings, bootstrap, scrubber)
    )
    app = _faust_app(settings, bootstrap)
    app.tutorloop_metrics = metrics  # type: ignore[attr-defined]
    app.tutorloop_sink = sink  # type: ignore[attr-defined]

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")

    run_batches = _batch_runner(
        app, settings.streams, metrics, topic(settings.topic(PREDICTIONS_DLQ))
    )

    def isolated(method: str, source_topic: str) -> _IsolatedWrite:
        if isinstance(sink, SinkProcess):
            return functools.partial(sink.write_isolated, method, source_topic)
        return _in_thread(getattr(sink, method), source_topic)

    @app.agent(topic(settings.topic(PREDICTIONS)), name="predictions")
    async def predictions(stream: Any) -> None:
        write = isolated("write_predictions", sink.predictions_topic)
        await run_batches("predictions", stream, write)

    @app.agent(topic(settings.topic(ESCALATIONS)), name="escalations")
    async def escalations(stream: Any) -> None:
        write = isolated("write_escalations", sink.escalations_topic)
        await run_batches("escalations", stream, write)

    _add_timers(app, settings.streams, metrics)

    @app.timer(interval=_PARKED_EVERY_S)  # type: ignore[untyped-decorator]
    async def retry_parked() -> None:
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(sink.retry_parked)
        except WarehouseBusyError as exc:
            log.warning("parked escalations: %s; retrying later", exc)
            return
        metrics.record("parked", outcome, time.perf_counter() - started)

    if settings.streams.metrics_port:
        metrics.serve(settings.streams.metrics_port)
    return app


# A record that fails the sink on its own is dead-lettered (streams.isolation). A failure of
# the whole sink (disk full, a broken file: every record fails alone) is not skipped: its
# offsets are not committed, and the worker exits with this code so that its supervisor
# restarts it from the last committed offsets. The sink is idempotent, so the replay is safe.
EXIT_SINK_FAILED = 70
_PARKED_EVERY_S = 2.0  # how often due parked escalations are read back (each has a backoff)
_SINK_ATTEMPTS = 3
_TRANSIENT_LOG_EVERY_S = 60.0


async def _write_with_retry(
    agent: str,
    write: _IsolatedWrite,
    records: list[RawRecord],
    metrics: StreamMetrics,
) -> BatchOutcome:
    failures = 0
    delay = 0.5
    waiting_since = logged_at = None
    while True:
        try:
            return await write(records)
        except WarehouseBusyError as exc:
            # Another process holds the warehouse for long: wait, never drop the batch.
            # Transient: retried forever, counted, and logged once a minute at most.
            metrics.transient(agent)
            now = time.monotonic()
            waiting_since = waiting_since or now
            if logged_at is None or now - logged_at >= _TRANSIENT_LOG_EVERY_S:
                logged_at = now
                log.warning(
                    "%s: %s; retrying (waiting %.0fs so far)", agent, exc, now - waiting_since
                )
        except Exception as exc:
            failures += 1
            # The exception type and first line only: never a record's content.
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if failures >= _SINK_ATTEMPTS:
                log.critical(
                    "%s: batch of %d records failed %d times (%s); exiting with code %d so "
                    "the worker restarts from committed offsets",
                    agent,
                    len(records),
                    failures,
                    reason,
                    EXIT_SINK_FAILED,
                )
                logging.shutdown()
                os._exit(EXIT_SINK_FAILED)
            log.error(
                "%s: batch failed (%s); attempt %d of %d", agent, reason, failures, _SINK_ATTEMPTS
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT; faust commits acked offsets on the way out."""
    app = build_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    finally:
        app.tutorloop_metrics.log_line()  # type: ignore[attr-defined]
        app.tutorloop_sink.close()  # type: ignore[attr-defined]
