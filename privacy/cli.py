"""`tutorloop privacy ...`: erasure and retention."""

from __future__ import annotations

import getpass

import typer
from rich.table import Table

from infra.cli_common import console, print_json, settings_of

privacy_app = typer.Typer(help="Erase a user's data; enforce retention.")

_JSON = typer.Option(False, "--json", help="machine-readable output")


@privacy_app.command("forget")
def forget_cmd(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="the pseudonymous user id to erase"),
    actor: str = typer.Option("", "--actor", help="who asked (recorded); default: the OS user"),
    json_out: bool = _JSON,
) -> None:
    """Delete a user's cases, labels, escalations and review items; record the erasure."""
    from infra.warehouse import Warehouse
    from privacy.erasure import forget

    report = forget(
        Warehouse.from_settings(settings_of(ctx)), user, actor=actor or getpass.getuser()
    )
    if json_out:
        print_json(report.to_dict())
        return
    console.print(
        f"erased {report.subject}: {report.cases_deleted} cases, {report.labels_deleted} labels, "
        f"{report.escalations_deleted} escalations, {report.review_items_deleted} review items"
    )
    if report.dataset_versions or report.model_versions:
        table = Table("contained the user (retrain without them)", "id")
        for dataset in report.dataset_versions:
            table.add_row("dataset version", dataset)
        for model in report.model_versions:
            table.add_row("model version", model)
        console.print(table)


@privacy_app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", help="e.g. 90d, 12w, 36h"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count, delete nothing"),
    json_out: bool = _JSON,
) -> None:
    """Retention: delete cases, labels, escalations and audit rows older than a cutoff."""
    from infra.warehouse import Warehouse
    from privacy.erasure import parse_duration, purge

    report = purge(
        Warehouse.from_settings(settings_of(ctx)), parse_duration(older_than), dry_run=dry_run
    )
    if json_out:
        print_json(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(f"rows stored before {report.cutoff} ({verb}):")
    table = Table("table", "rows")
    for name, count in report.deleted.items():
        table.add_row(name, str(count))
    console.print(table)
