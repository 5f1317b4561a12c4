"""Helpers every command group shares: settings from the context, output, one-line errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from tutorloop.infra.settings import Settings, load_settings

# Piped into a log or CI, rich assumes 80 columns and cuts table cells to "0.8…"; 120 keeps
# every table whole. A terminal, or COLUMNS, still decides when present.
_PIPED_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
console = Console(width=_PIPED_WIDTH)
err_console = Console(stderr=True)


# Options several command groups share.
JSON_OUT = typer.Option(False, "--json", help="machine-readable output")
LABELED_CSV = typer.Option(..., "--data", help="CSV with a text and a label column", dir_okay=False)
TEXT_COLUMN = typer.Option("text", "--text-col", help="column holding the text")
LABEL_COLUMN = typer.Option(
    None, "--label-col", help="column holding the label (default: label, category or intent)"
)


def settings_of(ctx: typer.Context) -> Settings:
    """The validated settings loaded by the root callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, Settings):  # a command invoked without the root callback
        obj = load_settings()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=True) + "\n")
