"""Benchmark: the embedded broker in memory mode vs durable (local S3) mode, in one run.

Usage: python bench/broker_storage.py [--events 20000] [--partitions 3]

For each mode, on a fresh data dir:
1. start-up: ``tutorloop broker up`` as the CLI does it (topics created), cold;
2. produce: N contract-valid prediction events through kafka-python (events/s);
3. consume: a plain aiokafka consumer reads them from the beginning (events/s);
4. capture: one ``tutorloop streams worker`` stores them in DuckDB (events/s), then the
   emit-to-row latency at a steady rate through the serving emitter;
5. footprint: resident memory of the broker processes and the size of the broker directory,
   with all events on the topic;
6. restart: M events produced with no worker running, ``broker down``, ``broker up`` again
   (restart time), and a count of the records still on the topic after the restart.

Prints a table with memory mode as the baseline (ratio durable/memory per figure).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from capture import (
    aiokafka_rate,
    audited,
    emit_at_rate,
    latencies_ms,
    produce,
    start_worker,
    worker_rate,
)

from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import load_settings
from tutorloop.infra.topics import PREDICTIONS, ensure_topics, list_topics, read_to_end

console = Console()


@dataclass
class Figures:
    start_s: float
    produce_eps: float
    consume_eps: float
    capture_eps: float
    latency_p50_ms: float
    latency_p99_ms: float
    restart_s: float
    survived: int
    pending: int
    rss_mb: float
    disk_mb: float


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _footprint(broker: EmbeddedBroker) -> tuple[float, float]:
    """Resident memory of tansu (+ SeaweedFS) and the broker directory's size on disk."""
    state = broker.state()
    assert state is not None
    rss = _rss_mb(state.pid) + (_rss_mb(state.s3.pid) if state.s3 else 0.0)
    disk = sum(f.stat().st_size for f in broker.dir.rglob("*") if f.is_file()) / 2**20
    return rss, disk


def _count_records(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` from the beginning up to the broker's high watermark."""
    return len(read_to_end(bootstrap, topic, timeout_s=60))


def _measure(storage: str, events: int, pending: int, partitions: int) -> Figures:
    tmp = Path(tempfile.mkdtemp(prefix=f"tutorloop-bench-{storage}-"))
    settings = load_settings(
        data_dir=tmp,
        broker={"port": free_port(), "partitions": partitions, "storage": storage},
    )
    broker = EmbeddedBroker(settings)
    started = time.perf_counter()
    bootstrap = broker.up().bootstrap_servers
    ensure_topics(settings, bootstrap)
    start_s = time.perf_counter() - started
    topic = settings.topic(PREDICTIONS)
    worker = None
    try:
        console.print(f"[{storage}] up in {start_s:.2f}s; producing {events:,} events")
        t0 = time.perf_counter()
        produce(bootstrap, topic, events)
        produce_eps = events / (time.perf_counter() - t0)
        consume_eps = asyncio.run(aiokafka_rate(bootstrap, topic, events))
        port = free_port()
        worker = start_worker(tmp, port, 0)
        capture_eps = worker_rate(port, events, tmp)
        ids = emit_at_rate(tmp, bootstrap, 1000, 200.0)
        deadline = time.monotonic() + 60
        while audited(port) < events + len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.terminate()
        worker.wait(timeout=60)
        worker = None
        lat = latencies_ms(settings, ids)
        # Events no worker has consumed yet, then a restart of the broker.
        produce(bootstrap, topic, pending)
        before = _count_records(bootstrap, topic)
        rss_mb, disk_mb = _footprint(broker)
        broker.down()
        t0 = time.perf_counter()
        bootstrap = broker.up().bootstrap_servers
        restart_s = time.perf_counter() - t0
        survived = _count_records(bootstrap, topic) if topic_exists(bootstrap, topic) else 0
        console.print(f"[{storage}] {before:,} records before the restart, {survived:,} after")
        return Figures(
            start_s, produce_eps, consume_eps, capture_eps,
            statistics.median(lat), lat[int(0.99 * (len(lat) - 1))],
            restart_s, survived, before, rss_mb, disk_mb,
        )  # fmt: skip
    finally:
        if worker is not None:
            worker.kill()
        broker.down()


def topic_exists(bootstrap: str, topic: str) -> bool:
    return topic in list_topics(bootstrap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pending", type=int, default=5_000, help="un-consumed at restart")
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    memory = _measure("memory", args.events, args.pending, args.partitions)
    durable = _measure("s3", args.events, args.pending, args.partitions)
    table = Table("figure", "memory (baseline)", "durable (s3)", "durable / memory")
    rows = [
        ("start-up, cold (s)", "start_s", "{:.2f}"),
        ("produce (events/s)", "produce_eps", "{:,.0f}"),
        ("consume, aiokafka (events/s)", "consume_eps", "{:,.0f}"),
        ("capture, one worker (events/s)", "capture_eps", "{:,.0f}"),
        ("emit -> row p50 (ms)", "latency_p50_ms", "{:.0f}"),
        ("emit -> row p99 (ms)", "latency_p99_ms", "{:.0f}"),
        ("restart (s)", "restart_s", "{:.2f}"),
        ("broker RSS, tansu + S3 (MB)", "rss_mb", "{:.0f}"),
        ("broker dir on disk (MB)", "disk_mb", "{:.1f}"),
    ]
    for name, attr, fmt in rows:
        a, b = getattr(memory, attr), getattr(durable, attr)
        ratio = f"{b / a:.2f}" if a >= 0.01 else "-"  # memory mode keeps nothing on disk
        table.add_row(name, fmt.format(a), fmt.format(b), ratio)
    table.add_row(
        "records kept by a restart",
        f"{memory.survived:,} of {memory.pending:,}",
        f"{durable.survived:,} of {durable.pending:,}",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    main()
