"""`tutorloop trainer ...`: bootstrap the first student, retrain now, or run the schedule."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from tutorloop.infra.cli_common import (
    JSON_OUT,
    LABEL_COLUMN,
    LABELED_CSV,
    TEXT_COLUMN,
    console,
    print_json,
    settings_of,
)
from tutorloop.infra.warehouse_backends import open_warehouse

trainer_app = typer.Typer(help="The student: bootstrap, retrain now, or run the schedule.")


@trainer_app.command("bootstrap")
def bootstrap_cmd(
    ctx: typer.Context,
    data: Path = LABELED_CSV,
    text_col: str = TEXT_COLUMN,
    label_col: str | None = LABEL_COLUMN,
    per_label: int = typer.Option(
        10, "--per-label", min=1, help="gold examples per label taken from the CSV"
    ),
    seed: int = typer.Option(0, "--seed", help="which examples are taken"),
    json_out: bool = JSON_OUT,
) -> None:
    """Train the first student from a gold seed set and register it as a candidate."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.loop.cycle import bootstrap, sample_per_label
    from tutorloop.loop.schedule import trainer_lock

    settings = settings_of(ctx)
    rows = sample_per_label(read_labeled_csv(data, text_col, label_col), per_label, seed)
    with trainer_lock(settings):
        report = bootstrap(
            settings,
            open_warehouse(settings),
            rows,
            source=f"seed:{data.name}:{per_label}:{seed}",
            actor=getpass.getuser(),
            progress=progress_bar,
        )
    _print_cycle(report.to_dict(), json_out)


@trainer_app.command("run")
def run_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """One retrain now: relabel → dataset → train → register a candidate."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.loop.cycle import run_cycle
    from tutorloop.loop.schedule import trainer_lock

    settings = settings_of(ctx)
    with trainer_lock(settings):
        report = run_cycle(settings, open_warehouse(settings), progress=progress_bar)
    _print_cycle(report.to_dict(), json_out)


@trainer_app.command("schedule")
def schedule_cmd(ctx: typer.Context) -> None:
    """Run continuously: retrain each cron window (and on N new labels); stop on SIGTERM."""
    from tutorloop.loop.schedule import Scheduler

    scheduler = Scheduler(settings_of(ctx))
    scheduler.install_signal_handlers()
    scheduler.run_forever()


def _print_cycle(report: dict[str, object], json_out: bool) -> None:
    if json_out:
        print_json(report)
        return
    metrics = report.get("metrics") or {}
    assert isinstance(metrics, dict)
    parts = [f"registered candidate {report['version']} (run {report['run_id']})"]
    for split in ("validation_calibrated", "eval"):
        q = metrics.get(split)
        if isinstance(q, dict):
            parts.append(
                f"{split}: accuracy {q['accuracy']:.3f}, macro-F1 {q['macro_f1']:.3f}, "
                f"ECE {q['ece']:.3f} (n={q['n']})"
            )
    parts.append(
        f"{report['quantization']} in {report['seconds']} s, temperature "
        f"{metrics.get('temperature', 1.0):.2f}"
    )
    if report.get("fallback_reason"):
        parts.append(f"fallback: {report['fallback_reason']}")
    gates = report.get("gates")
    if isinstance(gates, dict):
        if gates["rejected_reason"]:
            parts.append(f"rejected: {gates['rejected_reason']}")
        elif gates["passed"]:
            held = gates.get("not_promoted_reason")
            outcome = f", not promoted: {held}" if held else ""
            parts.append("all gates passed" + (", promoted" if gates["promoted"] else outcome))
        else:
            parts.append(f"failed gates: {', '.join(gates['failed'])} (not promoted)")
    console.print("; ".join(parts))
