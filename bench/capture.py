"""Benchmark: sustained capture throughput of one stream worker, and emit-to-row latency.

Usage: python bench/capture.py [--events 100000] [--partitions 3]

In one run, on one embedded tansu broker:
1. produces N contract-valid prediction events (10% below the confidence threshold, so 10%
   are captured and regex-scrubbed);
2. baseline: a plain aiokafka consumer reads the same topic from the beginning (no
   processing) — its events/s;
3. one `tutorloop streams worker` consumes the topic into a fresh DuckDB file — its events/s
   from the first audited event to the last (read from its Prometheus counters, so the
   measurement does not compete for the DuckDB lock);
4. with the worker caught up, events are emitted through PredictionEmitter at a steady rate
   and the latency from event time to warehouse insert is read from the audit rows.

Prints the worker's rate, the baseline's, their ratio, and latency p50/p99.
Targets (issue #3): >= 10,000 events/s per worker, ratio >= 0.3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from kafka import KafkaProducer
from rich.console import Console
from rich.progress import Progress

from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.topics import PREDICTIONS, ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.streams.emitter import PredictionEmitter
from tutorloop.streams.events import Consent, PredictionEvent, TopK, now_utc

console = Console()


def _event(i: int) -> PredictionEvent:
    low = i % 10 == 0
    return PredictionEvent(
        event_id=uuid.uuid4(),
        ts=now_utc(),
        tenant_id="bench",
        user_id=f"user-{i % 997}",
        request_id=f"req-{uuid.uuid4().hex}",
        model_version="v1",
        text=f"I was charged twice for card payment {i}, please refund to my account",
        label="card_payment_fee_charged",
        confidence=0.4 if low else 0.97,
        top_k=TopK.from_pairs(
            [("card_payment_fee_charged", 0.4 if low else 0.97), ("refund", 0.01)]
        ),
        consent=Consent(training=True),
    )


def produce(bootstrap: str, topic: str, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("producing", total=n)
        for i in range(n):
            ev = _event(i)
            producer.send(topic, key=ev.key, value=ev.to_bytes())
            if i % 5000 == 0:
                progress.update(task, completed=i)
        producer.flush()
    producer.close()


async def aiokafka_rate(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if started is None:
                    started = time.perf_counter()
                seen += len(records)
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _faust_ceiling(bootstrap: str, topic: str, n: int, tmp: Path) -> float:
    """The same topic through an empty faust agent: the framework's own ceiling."""
    script = Path(__file__).with_name("_faust_ceiling.py")
    out = subprocess.run(
        [sys.executable, str(script), bootstrap, topic, str(n), str(tmp / "faust-ceiling")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    match = re.search(r"rate ([0-9.]+)", out.stdout)
    if match:
        return float(match.group(1))
    raise SystemExit(f"faust ceiling run failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def _sink_alone(tmp: Path, n: int, batch: int) -> float:
    """The sink without Kafka or faust: decode, policy, scrub, one transaction per batch."""
    from tutorloop.infra.settings_sections import CaptureSettings
    from tutorloop.privacy.scrubber import RegexScrubber
    from tutorloop.streams.batch import RawRecord
    from tutorloop.streams.policy import CapturePolicy
    from tutorloop.streams.sink import CaptureSink

    sink = CaptureSink(
        Warehouse(tmp / "sink-alone.duckdb"),
        CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0)),
        RegexScrubber(),
        predictions_topic="predictions",
        escalations_topic="escalations",
    )
    records = [RawRecord(_event(i).to_bytes(), 0, i) for i in range(n)]
    sink.write_predictions(records[:1])  # create and migrate the file outside the timing
    started = time.perf_counter()
    for i in range(1, n, batch):
        sink.write_predictions(records[i : i + batch])
    return (n - 1) / (time.perf_counter() - started)


def _metric(port: int, name: str) -> float:
    """One predictions-agent sample from the worker's Prometheus text (0 when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    match = re.search(rf'{name}\{{agent="predictions"\}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def audited(port: int) -> int:
    return int(_metric(port, "tutorloop_streams_audited_total"))


def _batch_stats(port: int) -> tuple[int, float]:
    return (
        int(_metric(port, "tutorloop_streams_batch_seconds_count")),
        _metric(port, "tutorloop_streams_batch_seconds_sum"),
    )


def start_worker(tmp: Path, metrics_port: int, batch_max: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    env.update(
        TUTORLOOP_DATA_DIR=str(tmp),
        TUTORLOOP_STREAMS__METRICS_PORT=str(metrics_port),
        TUTORLOOP_STREAMS__SESSION_TIMEOUT_S="6",
        TUTORLOOP_STREAMS__HEARTBEAT_INTERVAL_S="1",
        TUTORLOOP_CAPTURE__AUDIT_SAMPLE_RATE="0",
        TUTORLOOP_PRIVACY__SCRUBBER="regex",
        TUTORLOOP_LOG_LEVEL=os.environ.get("TUTORLOOP_LOG_LEVEL", "WARNING"),
    )
    if batch_max:
        env["TUTORLOOP_STREAMS__BATCH_MAX"] = str(batch_max)
    return subprocess.Popen(
        [sys.executable, "-m", "tutorloop", "streams", "worker"],
        env=env,
        stdout=(tmp / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def worker_rate(port: int, events: int, tmp: Path) -> float:
    """Events/s the worker sustains from its first stored event until all are stored."""
    first_at: float | None = None
    first_count = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("worker", total=events)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            count = audited(port)
            now = time.perf_counter()
            if count and first_at is None:
                first_at, first_count = now, count
            progress.update(task, completed=count)
            if count >= events:
                break
            time.sleep(0.1)
    done_at = time.perf_counter()
    if first_at is None or audited(port) < events:
        raise SystemExit(f"worker did not finish; see {tmp / 'worker.log'}")
    batches, busy = _batch_stats(port)
    console.print(
        f"worker: {batches} batches, mean {events / max(batches, 1):.0f} events, "
        f"{busy:.1f}s inside the sink of {done_at - first_at:.1f}s wall"
    )
    return (events - first_count) / (done_at - first_at)


def emit_at_rate(tmp: Path, bootstrap: str, n: int, rate: float) -> list[str]:
    """Emit ``n`` events at ``rate``/s through the serving emitter; their event ids."""
    console.print(f"emitting {n} events at {rate:.0f}/s")
    with PredictionEmitter.from_settings(
        load_settings(data_dir=tmp, broker={"bootstrap_servers": bootstrap})
    ) as emitter:
        ids = []
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(n):
            ev = _event(i)
            ids.append(str(ev.event_id))
            emitter.emit(ev)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    return ids


def latencies_ms(settings: Settings, ids: list[str]) -> list[float]:
    rows = open_warehouse(settings).query(
        "SELECT epoch(ingested_at) - epoch(ts) FROM predictions_audit "
        "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
        [ids],
    )
    return sorted(r[0] * 1000 for r in rows)


def _report(rates: dict[str, float], lat_ms: list[float], latency_rate: float) -> None:
    worker, base, faust = rates["worker"], rates["baseline"], rates["faust"]
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[int(0.99 * (len(lat_ms) - 1))]
    console.print()
    console.print(f"worker sustained:          {worker:,.0f} events/s (target >= 10,000)")
    console.print(f"baseline (plain aiokafka): {base:,.0f} events/s")
    console.print(f"ratio worker/baseline:     {worker / base:.2f} (target >= 0.3)")
    console.print(
        f"faust alone (empty agent): {faust:,.0f} events/s "
        f"(worker reaches {worker / faust:.0%} of it)"
    )
    console.print(f"sink alone (no Kafka):     {rates['sink']:,.0f} events/s")
    console.print(
        f"emit -> row latency:       p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"({len(lat_ms)} events at {latency_rate:.0f}/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--latency-events", type=int, default=2000)
    parser.add_argument("--latency-rate", type=float, default=200.0, help="events/s")
    parser.add_argument("--batch-max", type=int, default=0, help="streams.batch_max override")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-bench-"))
    settings = load_settings(
        data_dir=tmp, broker={"port": free_port(), "partitions": args.partitions}
    )
    broker = EmbeddedBroker(settings)
    state = broker.up()
    bootstrap = state.bootstrap_servers
    worker: subprocess.Popen[bytes] | None = None
    rates: dict[str, float] = {}
    try:
        ensure_topics(settings, bootstrap)
        topic = settings.topic(PREDICTIONS)
        console.print(f"producing {args.events:,} events to {topic} ({args.partitions} partitions)")
        produce(bootstrap, topic, args.events)

        rates["baseline"] = asyncio.run(aiokafka_rate(bootstrap, topic, args.events))
        console.print(f"baseline aiokafka consumer: {rates['baseline']:,.0f} events/s")
        rates["faust"] = _faust_ceiling(bootstrap, topic, args.events, tmp)
        console.print(f"faust, empty agent:         {rates['faust']:,.0f} events/s")
        rates["sink"] = _sink_alone(tmp, min(args.events, 20_000), settings.streams.batch_max)
        console.print(f"sink alone (no Kafka):      {rates['sink']:,.0f} events/s")

        port = free_port()
        worker = start_worker(tmp, port, args.batch_max)
        rates["worker"] = worker_rate(port, args.events, tmp)
        ids = emit_at_rate(tmp, bootstrap, args.latency_events, args.latency_rate)
        target = args.events + args.latency_events
        deadline = time.monotonic() + 60
        while audited(port) < target and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.terminate()
        worker.wait(timeout=60)
        worker = None
        _report(rates, latencies_ms(settings, ids), args.latency_rate)
    finally:
        if worker is not None:
            worker.kill()
        broker.down()


if __name__ == "__main__":
    main()
