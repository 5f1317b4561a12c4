"""`tutorloop config ...`: the configuration in force, and whether it is valid."""

from __future__ import annotations

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, print_json, settings_of
from tutorloop.infra.settings import config_path, flatten

config_app = typer.Typer(help="Show and check the configuration in force.")


@config_app.command("show")
def show(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """The effective configuration: defaults, then the TOML file, then TUTORLOOP_* variables."""
    settings = settings_of(ctx)
    data = settings.model_dump(mode="json")
    data["_resolved"] = {
        "config_file": str(config_path() or "(none: defaults)"),
        "warehouse_path": str(settings.warehouse_path),
        "warehouse_url": settings.warehouse.url,
    }
    if json_out:
        print_json(data)
        return
    table = Table("setting", "value")
    for key, value in flatten(data):
        table.add_row(key, str(value))
    console.print(table)


@config_app.command("check")
def check(ctx: typer.Context) -> None:
    """Validate the configuration and exit (0 when valid)."""
    settings_of(ctx)
    console.print(f"configuration valid ({config_path() or 'defaults, no file'})")
