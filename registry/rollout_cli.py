"""`tutorloop registry canary status|promote|abort`: the running shadow or canary release."""

from __future__ import annotations

import getpass
from typing import Any

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, print_json, settings_of
from tutorloop.infra.tables import RolloutOutcome
from tutorloop.infra.warehouse_backends import open_warehouse

canary_app = typer.Typer(help="The running shadow or canary release: status, promote, abort.")

_ACTOR = typer.Option("", "--actor", help="who acts (recorded); default: the OS user")
_REASON = typer.Option("", "--reason", help="why (recorded)")


def _warehouse(ctx: typer.Context) -> Any:

    return open_warehouse(settings_of(ctx))


def _pct(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"


@canary_app.command("status")
def status_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """The running rollout and its live windows (all replicas summed), and recent outcomes."""
    from tutorloop.registry.rollout import rollout_status

    status = rollout_status(_warehouse(ctx), settings_of(ctx))
    if json_out:
        print_json(status)
        return
    running = status["running"]
    if running is None:
        console.print("no rollout running")
    else:
        share = f" ({running['percent']:g}% of users)" if running["mode"] == "canary" else ""
        console.print(f"{running['mode']} of {running['version']}{share} next to "
                      f"{running['champion']}, since {running['started_at']}")  # fmt: skip
        table = Table("window", "requests", "answered", "agreement", "confidence c/v",
                      "abstention c/v", "p95 ms c/v", "errors")  # fmt: skip
        for w in status["windows"]:
            table.add_row(
                str(w["window_start"])[:19], str(w["requests"]), str(w["challenger_answered"]),
                _pct(w["agreement"]),
                f"{_pct(w['champion_confidence'])} / {_pct(w['challenger_confidence'])}",
                f"{_pct(w['champion_abstention'])} / {_pct(w['challenger_abstention'])}",
                f"{w['champion_p95_ms'] or 0:.1f} / {w['challenger_p95_ms'] or 0:.1f}",
                str(w["errors"]),
            )  # fmt: skip
        console.print(table)
    for r in status["recent"]:
        if r["outcome"]:
            console.print(f"{r['mode']} of {r['version']}: {r['outcome']} ({r['end_reason']})",
                          highlight=False)  # fmt: skip


def _end(ctx: typer.Context, outcome: RolloutOutcome, actor: str, reason: str) -> None:
    from tutorloop.registry.rollout import end_rollout

    change = end_rollout(_warehouse(ctx), settings_of(ctx), outcome,
                         actor=actor or getpass.getuser(), reason=reason)  # fmt: skip
    if change is not None:
        console.print(f"{change.action}: {change.from_version} -> {change.to_version}")


@canary_app.command("promote")
def promote_cmd(ctx: typer.Context, actor: str = _ACTOR, reason: str = _REASON) -> None:
    """Make the rollout's version the champion now."""
    _end(ctx, RolloutOutcome.PROMOTED, actor, reason or "promoted by command")


@canary_app.command("abort")
def abort_cmd(ctx: typer.Context, actor: str = _ACTOR, reason: str = _REASON) -> None:
    """End the rollout; the champion keeps serving."""
    _end(ctx, RolloutOutcome.ABORTED, actor, reason or "aborted by command")
