"""`tutorloop dataset ...`: build and list dataset versions (import comes from labeling)."""

from __future__ import annotations

import typer
from rich.table import Table

from tutorloop.infra.cli_common import (
    JSON_OUT,
    console,
    print_json,
    settings_of,
)
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.cli import import_cmd

dataset_app = typer.Typer(help="Training datasets: import labeled data, build, list.")
dataset_app.command("import")(import_cmd)


@dataset_app.command("build")
def build_cmd(
    ctx: typer.Context,
    previous: str = typer.Option(
        "", "--previous", help="dataset hash to replay from; default: the champion's dataset"
    ),
    no_previous: bool = typer.Option(False, "--no-previous", help="treat every row as new"),
    json_out: bool = JSON_OUT,
) -> None:
    """Build a dataset version from the warehouse (caps, eval set, dedup, replay, split)."""
    from tutorloop.labeling.teachers import label_set
    from tutorloop.registry.store import champion
    from tutorloop.trainer.dataset import DatasetSpec
    from tutorloop.trainer.dataset_store import build_dataset

    settings = settings_of(ctx)
    warehouse = open_warehouse(settings)
    current = champion(warehouse)
    champion_data = current.dataset_hash if current else None
    base = None if no_previous else (previous or champion_data)
    spec = DatasetSpec.from_settings(settings, label_set(settings, warehouse), previous=base)
    version = build_dataset(warehouse, spec, settings.datasets_dir)
    result = {
        "dataset_hash": version.dataset_hash,
        "path": str(version.path),
        "created": version.created,
        "counts": version.counts,
    }
    if json_out:
        print_json(result)
        return
    word = "built" if version.created else "unchanged (already built)"
    splits = ", ".join(f"{k} {v}" for k, v in sorted(version.counts["by_split"].items()))
    sources = ", ".join(f"{k} {v}" for k, v in sorted(version.counts["by_source"].items()))
    console.print(f"{word}: dataset {version.dataset_hash[:16]} — {splits}; sources: {sources}")
    dropped = version.counts["dropped"]
    if dropped:
        console.print("left out: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))


@dataset_app.command("list")
def list_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Dataset versions, newest first."""
    from tutorloop.trainer.dataset_store import list_dataset_versions

    rows = list_dataset_versions(open_warehouse(settings_of(ctx)))
    if json_out:
        print_json(rows)
        return
    table = Table("dataset", "created", "train", "validation", "eval")
    for row in rows:
        table.add_row(
            row["dataset_hash"][:16],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            str(row["n_train"]),
            str(row["n_validation"]),
            str(row["n_eval"]),
        )
    console.print(table)
