"""Commands of the streams package."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tutorloop.infra.cli_common import console, fail, print_json
from tutorloop.streams.events import EVENT_TYPES, SCHEMA_VERSION, json_schemas


def schemas(
    topic: str | None = typer.Option(
        None, "--topic", "-t", help=f"only this topic ({', '.join(EVENT_TYPES)})"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="write <topic>.v<N>.schema.json files into this directory",
        file_okay=False,
    ),
) -> None:
    """Print the JSON Schema of the event contracts, for producers in any language."""
    all_schemas = json_schemas()
    if topic is not None:
        if topic not in all_schemas:
            fail(f"unknown topic {topic!r}; expected one of: {', '.join(all_schemas)}", 2)
        all_schemas = {topic: all_schemas[topic]}
    if out is None:
        print_json(all_schemas[topic] if topic else all_schemas)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas.items():
        path = out / f"{name}.v{SCHEMA_VERSION}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")


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
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """What the workers stored: audit rows, captures by reason, escalations, gold labels."""
    from rich.table import Table

    from tutorloop.infra.cli_common import settings_of
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.streams.stats import warehouse_stats

    summary = warehouse_stats(Warehouse.from_settings(settings_of(ctx)))
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
