"""Commands of the streams package."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tutorloop.infra.cli_common import JSON_OUT, console, fail, print_json
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.streams.batch import DeadLetter, LetterStatus
from tutorloop.streams.events import EVENT_TYPES, READABLE_VERSIONS, SCHEMA_VERSION, json_schemas


def schemas(
    topic: str | None = typer.Option(
        None, "--topic", "-t", help=f"only this topic ({', '.join(EVENT_TYPES)})"
    ),
    version: int | None = typer.Option(
        None,
        "--version",
        "-v",
        help=f"only this contract version (readable: {', '.join(map(str, READABLE_VERSIONS))})",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="write <topic>.v<N>.schema.json files into this directory",
        file_okay=False,
    ),
) -> None:
    """Print the JSON Schema of every contract version a worker reads, for producers in any
    language (the current one, and the previous one during its compatibility window)."""
    if topic is not None and topic not in EVENT_TYPES:
        fail(f"unknown topic {topic!r}; expected one of: {', '.join(EVENT_TYPES)}", 2)
    if version is not None and version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        fail(f"no contract version {version}; workers read {readable}", 2)
    versions = [version] if version is not None else list(READABLE_VERSIONS)
    topics = [topic] if topic is not None else list(EVENT_TYPES)
    chosen = {(t, v): json_schemas(v)[t] for v in versions for t in topics}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for (name, number), schema in chosen.items():
            path = out / f"{name}.v{number}.schema.json"
            path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
            console.print(f"wrote {path}")
        return
    if topic is not None and version is not None:
        print_json(chosen[topic, version])
        return
    print_json(
        {
            "current_version": SCHEMA_VERSION,
            "readable_versions": list(READABLE_VERSIONS),
            "schemas": {t: {f"v{v}": chosen[t, v] for v in versions} for t in topics},
        }
    )


streams_app = typer.Typer(help="Run the stream workers and summarize what they captured.")


@streams_app.command("worker")
def worker(ctx: typer.Context) -> None:
    """Run a capture worker until SIGTERM/SIGINT (several share partitions by group id)."""
    from tutorloop.infra.cli_common import settings_of
    from tutorloop.streams.worker import run_worker

    run_worker(settings_of(ctx))


@streams_app.command("stats")
def stats(
    ctx: typer.Context,
    json_out: bool = JSON_OUT,
) -> None:
    """What the workers stored: audit rows, captures by reason, escalations, gold labels."""
    from rich.table import Table

    from tutorloop.infra.cli_common import settings_of
    from tutorloop.streams.stats import warehouse_stats

    summary = warehouse_stats(open_warehouse(settings_of(ctx)))
    if json_out:
        print_json(summary)
        return
    table = Table("metric", "value")
    for key, value in summary.items():
        if isinstance(value, dict):
            for sub, n in value.items():
                table.add_row(f"{key}.{sub}", str(n))
        else:
            table.add_row(key, str(value))
    console.print(table)


dlq_app = typer.Typer(help="Dead letters: list them, replay them after the fix.")
_REASON = typer.Option(None, "--reason", "-r", help="only letters whose reason contains this")
_SINCE = typer.Option(
    None, "--since", help="only letters first written since: an ISO date/time, or 90m, 24h, 7d"
)


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    reason: str | None = _REASON,
    since: str | None = _SINCE,
    every: bool = typer.Option(False, "--all", help="also replayed and expired letters"),
    json_out: bool = JSON_OUT,
) -> None:
    """The dead letters (latest state of each source record), open ones unless --all."""
    from dataclasses import asdict

    from rich.table import Table

    letters = _chosen_letters(ctx, reason, since, None if every else "open")
    if json_out:
        print_json([asdict(letter) for letter in letters])
        return
    table = Table("source", "event id", "first failed", "status", "reason")
    for letter in letters:
        table.add_row(
            f"{letter.source_topic}[{letter.partition}]@{letter.offset}",
            letter.event_id or "-",
            letter.ts[:19],
            letter.status,
            letter.reason,
        )
    console.print(table)
    console.print(f"{len(letters)} letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    reason: str | None = _REASON,
    since: str | None = _SINCE,
    json_out: bool = JSON_OUT,
) -> None:
    """Re-read the source records of open letters and run them through the current code."""
    from datetime import timedelta

    from kafka import KafkaProducer

    from tutorloop.infra.broker import bootstrap_servers
    from tutorloop.infra.cli_common import settings_of
    from tutorloop.infra.topics import PREDICTIONS_DLQ
    from tutorloop.streams.dead_letters import replay
    from tutorloop.streams.isolation import SystemicSinkError
    from tutorloop.streams.sink_process import build_sink

    settings = settings_of(ctx)
    letters = _chosen_letters(ctx, reason, since, "open")
    bootstrap = bootstrap_servers(settings)
    sink = build_sink(settings, bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    dlq = settings.topic(PREDICTIONS_DLQ)
    readers = [(sink.predictions_topic, sink.fetcher),
               (sink.escalations_topic, sink.escalation_fetcher)]  # fmt: skip
    writers = {sink.predictions_topic: sink.write_predictions,
               sink.escalations_topic: sink.write_escalations}  # fmt: skip
    try:
        report = replay(
            letters,
            writers,
            {topic: fetcher for topic, fetcher in readers if fetcher is not None},
            lambda letter: producer.send(dlq, key=letter.key, value=letter.to_bytes()),
            retention=timedelta(hours=settings.streams.retention_hours),
        )
        producer.flush(timeout=30)
    except SystemicSinkError as exc:
        fail(f"the sink fails on every record, not on these letters alone: {exc}")
    finally:
        producer.close()
        sink.close()
    summary = {
        "letters": len(letters),
        "replayed": report.replayed,
        "still_failing": report.still_failing,
        "expired": report.expired,
        "unreadable": report.unreadable,
        "cases_captured": sum(report.outcome.captured.values()),
        "human_labels": report.outcome.human_labels,
    }
    if json_out:
        print_json(summary)
        return
    console.print(", ".join(f"{key}={value}" for key, value in summary.items()))


def _chosen_letters(
    ctx: typer.Context, reason: str | None, since: str | None, status: LetterStatus | None
) -> list[DeadLetter]:
    from tutorloop.infra.broker import bootstrap_servers
    from tutorloop.infra.cli_common import settings_of
    from tutorloop.infra.topics import PREDICTIONS_DLQ
    from tutorloop.streams.dead_letters import DeadLetterError, parse_since, read_letters, select

    settings = settings_of(ctx)
    try:
        since_at = parse_since(since) if since else None
        letters = read_letters(bootstrap_servers(settings), settings.topic(PREDICTIONS_DLQ))
    except (DeadLetterError, TimeoutError) as exc:
        fail(str(exc))
    return select(letters, status=status, reason=reason, since=since_at)


streams_app.add_typer(dlq_app, name="dlq")
