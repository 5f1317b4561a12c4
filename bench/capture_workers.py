"""Benchmark: capture scaled by workers — one vs two workers in one group, on DuckDB and on
PostgreSQL, with emit-to-row latency, all in one run.

Usage: python bench/capture_workers.py [--events 60000] [--partitions 6]
                                      [--backends duckdb,postgres]

One embedded tansu broker; N contract-valid events produced once to a topic of ``--partitions``
partitions; then, for each backend: one `tutorloop streams worker` consumes the topic into a
fresh warehouse (its own consumer group), then two workers in one new group (each with its own
data dir, as two hosts would run them) consume it into another fresh warehouse. A rate is
counted from the moment every worker of the group has stored an event (the group's join and
rebalance are left out) until all N are stored, from the workers' Prometheus counters. With
the two workers still running, events are emitted at a steady rate and their emit-to-row
latency is read from the audit rows. The empty faust agent's rate on the same topic is the
ceiling (issue #17: one worker >= 85% of it; two workers >= 1.5x one); it varies by a quarter
from run to run, so it is measured before and after the workers and both are printed.

How busy the machine's cores were during each measurement (from /proc/stat) is printed with
it: two workers on one machine can only add what the cores left idle allow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import _faust_ceiling, aiokafka_rate, audited, emit_at_rate, produce

from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.local_postgres import LocalPostgres, start_local_postgres, stop_local_postgres
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import load_settings
from tutorloop.infra.topics import PREDICTIONS, ensure_topics
from tutorloop.infra.warehouse_backends import open_warehouse

console = Console()


def _warehouse_env(backend: str, tmp: Path, pg: LocalPostgres | None) -> dict[str, str]:
    """A fresh warehouse for one measurement."""
    if backend == "duckdb":
        return {"TUTORLOOP_WAREHOUSE__PATH": str(tmp / f"w-{uuid.uuid4().hex[:8]}.duckdb")}
    import psycopg

    assert pg is not None
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return {"TUTORLOOP_WAREHOUSE__URL": pg.url.rsplit("/", 1)[0] + f"/{name}"}


def _start(
    tmp: Path, bootstrap: str, group: str, warehouse: dict[str, str], sink_process: str = "true"
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    data_dir = tmp / f"host-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    env.update(
        warehouse,
        TUTORLOOP_DATA_DIR=str(data_dir),
        TUTORLOOP_BROKER__BOOTSTRAP_SERVERS=bootstrap,
        TUTORLOOP_STREAMS__GROUP_ID=group,
        TUTORLOOP_STREAMS__METRICS_PORT=str(port),
        TUTORLOOP_STREAMS__SESSION_TIMEOUT_S="6",
        TUTORLOOP_STREAMS__HEARTBEAT_INTERVAL_S="1",
        TUTORLOOP_CAPTURE__AUDIT_SAMPLE_RATE="0",
        TUTORLOOP_PRIVACY__SCRUBBER="regex",
        TUTORLOOP_LOG_LEVEL="WARNING",
        TUTORLOOP_STREAMS__SINK_PROCESS=sink_process,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutorloop", "streams", "worker"],
        env=env,
        stdout=(data_dir / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return port, proc


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _group_rate(ports: list[int], events: int) -> tuple[float, float]:
    """Events/s from the moment every worker has stored something until all are stored, and
    the share of all cores busy meanwhile."""
    deadline = time.monotonic() + 900
    start_at, start_count, ticks = None, 0, (0, 0)
    while time.monotonic() < deadline:
        counts = [audited(p) for p in ports]
        now = time.perf_counter()
        if start_at is None and all(counts):
            start_at, start_count, ticks = now, sum(counts), _cpu_ticks()
        if sum(counts) >= events:
            break
        time.sleep(0.05)
    if start_at is None or sum(audited(p) for p in ports) < events:
        raise SystemExit(f"workers did not finish: {[audited(p) for p in ports]} of {events}")
    rate = (events - start_count) / (time.perf_counter() - start_at)
    busy, total = (end - begin for end, begin in zip(_cpu_ticks(), ticks, strict=True))
    return rate, busy / total


def _latency_ms(
    tmp: Path, bootstrap: str, warehouse: dict[str, str], n: int, rate: float
) -> list[float]:
    ids = emit_at_rate(tmp, bootstrap, n, rate)
    settings = load_settings(data_dir=tmp, warehouse={
        "url": warehouse.get("TUTORLOOP_WAREHOUSE__URL"),
        "path": warehouse.get("TUTORLOOP_WAREHOUSE__PATH")})  # fmt: skip
    wh = open_warehouse(settings)
    deadline = time.monotonic() + 60
    sql = ("SELECT epoch(ingested_at) - epoch(ts) FROM predictions_audit "
           "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))")  # fmt: skip
    rows = wh.query(sql, [ids])
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = wh.query(sql, [ids])
    return sorted(float(r[0]) * 1000 for r in rows)


def _measure(backend: str, tmp: Path, bootstrap: str, events: int, pg: LocalPostgres | None,
             latency: tuple[int, float], sink_process: str) -> dict[str, float]:  # fmt: skip
    result: dict[str, float] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for workers in (1, 2):
            warehouse = _warehouse_env(backend, tmp, pg)
            group = f"bench-{backend}-{workers}-{uuid.uuid4().hex[:6]}"
            started = [
                _start(tmp, bootstrap, group, warehouse, sink_process) for _ in range(workers)
            ]
            procs = [p for _, p in started]
            rate, busy = _group_rate([port for port, _ in started], events)
            result[f"{workers}w"], result[f"{workers}w_busy"] = rate, busy
            console.print(f"{backend}: {workers} worker(s) {rate:,.0f}/s, cores {busy:.0%} busy")
            if workers == 2:
                lat = _latency_ms(tmp, bootstrap, warehouse, *latency)
                result["p50_ms"] = statistics.median(lat)
                result["p99_ms"] = lat[int(0.99 * (len(lat) - 1))]
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
            procs = []
    finally:
        for p in procs:
            p.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--backends", default="duckdb,postgres")
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--latency-rate", type=float, default=200.0)
    parser.add_argument(
        "--sink-in-process", action="store_true", help="streams.sink_process = false"
    )
    args = parser.parse_args()
    sink_process = "false" if args.sink_in_process else "true"
    backends = args.backends.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-bench-workers-"))
    settings = load_settings(data_dir=tmp, broker={"port": free_port(),
                                                  "partitions": args.partitions})  # fmt: skip
    broker = EmbeddedBroker(settings)
    bootstrap = broker.up().bootstrap_servers
    pg = (start_local_postgres(Path(tempfile.mkdtemp(prefix="tutorloop-bench-pg-")))
          if "postgres" in backends else None)  # fmt: skip
    try:
        ensure_topics(settings, bootstrap)
        topic = settings.topic(PREDICTIONS)
        produce(bootstrap, topic, args.events)
        base = asyncio.run(aiokafka_rate(bootstrap, topic, args.events))
        before = _faust_ceiling(bootstrap, topic, args.events, tmp)
        console.print(f"plain aiokafka {base:,.0f} events/s; empty faust agent {before:,.0f}")
        latency = (args.latency_events, args.latency_rate)
        results = {
            b: _measure(b, tmp, bootstrap, args.events, pg, latency, sink_process) for b in backends
        }
        after = _faust_ceiling(bootstrap, topic, args.events, tmp)
    finally:
        if pg is not None:
            stop_local_postgres(pg)
        broker.down()
    ceiling = (before + after) / 2
    console.print(
        f"\n{args.events:,} events, {args.partitions} partitions; empty faust agent "
        f"{before:,.0f} before, {after:,.0f} after (mean {ceiling:,.0f}) events/s"
    )
    for backend, r in results.items():
        console.print(
            f"{backend:9s} one worker {r['1w']:,.0f}/s = {r['1w'] / ceiling:.0%} of faust's mean "
            f"({r['1w'] / max(before, after):.0%}-{r['1w'] / min(before, after):.0%}), cores "
            f"{r['1w_busy']:.0%} busy; two workers {r['2w']:,.0f}/s = {r['2w'] / r['1w']:.2f}x "
            f"one, cores {r['2w_busy']:.0%} busy; "
            f"emit->row p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
        )


if __name__ == "__main__":
    main()
