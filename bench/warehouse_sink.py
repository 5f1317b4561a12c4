"""Benchmark: the capture sink on PostgreSQL vs DuckDB, same events, same run.

Usage: python bench/warehouse_sink.py [--events 50000] [--batch 5000] [--rounds 3]

The sink without Kafka or faust (decode, capture policy, regex scrub, one transaction per
batch; 10% of events captured as cases) writing to a fresh DuckDB file and to a fresh database
on a local PostgreSQL server started here (fsync on, as in production), each ``--rounds``
times, alternating. Prints events/s per backend (median and range) and PostgreSQL's rate as a
ratio of DuckDB's. The broker is left out on purpose: it is the same for both (issue #17).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import _event

from tutorloop.infra.local_postgres import start_local_postgres, stop_local_postgres
from tutorloop.infra.pg_warehouse import PostgresWarehouse
from tutorloop.infra.settings_sections import CaptureSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.streams.batch import RawRecord
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.sink import CaptureSink

console = Console()


def _rate(warehouse: Warehouse, records: list[RawRecord], batch: int) -> float:
    sink = CaptureSink(
        warehouse,
        CapturePolicy.from_settings(CaptureSettings(audit_sample_rate=0)),
        RegexScrubber(),
        predictions_topic="predictions",
        escalations_topic="escalations",
    )
    sink.write_predictions(records[:1])  # create and migrate outside the timing
    started = time.perf_counter()
    for i in range(1, len(records), batch):
        sink.write_predictions(records[i : i + batch])
    return (len(records) - 1) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-bench-sink-"))
    # Its own folder: as root the server runs as `postgres`, which cannot enter root's.
    server = start_local_postgres(Path(tempfile.mkdtemp(prefix="tutorloop-bench-pg-")))
    rates: dict[str, list[float]] = {"duckdb": [], "postgres": []}
    try:
        import psycopg

        for r in range(args.rounds):
            records = [RawRecord(_event(i).to_bytes(), 0, i) for i in range(args.events)]
            rates["duckdb"].append(_rate(Warehouse(tmp / f"r{r}.duckdb"), records, args.batch))
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(server.url, autocommit=True) as con:
                con.execute(f"CREATE DATABASE {name}")
            url = server.url.rsplit("/", 1)[0] + f"/{name}"
            rates["postgres"].append(_rate(PostgresWarehouse(url), records, args.batch))
            console.print(f"round {r + 1}: duckdb {rates['duckdb'][-1]:,.0f} events/s, "
                          f"postgres {rates['postgres'][-1]:,.0f} events/s")  # fmt: skip
    finally:
        stop_local_postgres(server)
    for backend, values in rates.items():
        console.print(f"{backend:9s} median {statistics.median(values):,.0f} events/s "
                      f"(range {min(values):,.0f}-{max(values):,.0f})")  # fmt: skip
    ratio = statistics.median(rates["postgres"]) / statistics.median(rates["duckdb"])
    console.print(f"postgres / duckdb: {ratio:.2f}x ({args.events:,} events, batch {args.batch})")


if __name__ == "__main__":
    main()
