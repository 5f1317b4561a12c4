"""`tutorloop privacy ...`: erasure and retention."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from tutorloop.infra.cli_common import (
    JSON_OUT,
    console,
    fail,
    print_json,
    settings_of,
)
from tutorloop.infra.tables import DEFAULT_TENANT
from tutorloop.infra.warehouse_backends import open_warehouse

privacy_app = typer.Typer(help="Erasure, retention, and scrubber evaluation.")


@privacy_app.command("ledger")
def ledger_cmd(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="one user's lifetime spend"),
    tenant: str = typer.Option(DEFAULT_TENANT, "--tenant", help="the user's tenant"),
    json_out: bool = JSON_OUT,
) -> None:
    """The privacy ledger: every DP run's spend, or one user's lifetime epsilon and the runs
    and versions it went into."""
    from tutorloop.privacy.lifetime import ledger_runs, user_ledger

    warehouse = open_warehouse(settings_of(ctx))
    if user is None:
        runs = ledger_runs(warehouse)
        if json_out:
            print_json({"runs": runs})
            return
        table = Table("run", "ts", "epsilon", "delta", "user epsilon", "k", "users", "version")
        for run in runs:
            table.add_row(
                run["run_id"],
                str(run["ts"])[:19],
                f"{run['epsilon']:.3g}",
                f"{run['delta']:.2g}",
                f"{run['user_epsilon'] or 0:.3g}",
                str(run["rows_per_user"] or ""),
                str(run["users"] or ""),
                ", ".join(run["versions"]),
            )
        console.print(table)
        return
    entry = user_ledger(warehouse, tenant, user)
    if json_out:
        print_json(entry)
        return
    lifetime = entry["lifetime"]
    console.print(
        f"user {user!r} in tenant {tenant!r}: lifetime epsilon {lifetime['epsilon']:.4g} "
        f"at delta {lifetime['delta']:.2g} ({lifetime['method']}) over "
        f"{len(lifetime['runs'])} DP run(s)",
        highlight=False,
    )
    table = Table("run", "ts", "rows", "run epsilon", "user epsilon (run)", "version")
    for run in lifetime["runs"]:
        table.add_row(
            run["run_id"],
            str(run["ts"])[:19],
            str(run["rows"]),
            f"{run['epsilon']:.3g}",
            f"{run['user_epsilon']:.3g}",
            ", ".join(run["versions"]),
        )
    if lifetime["runs"]:
        console.print(table)


@privacy_app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", help="e.g. 90d, 12w, 36h"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count, delete nothing"),
    json_out: bool = JSON_OUT,
) -> None:
    """Retention: delete cases, labels, escalations and audit rows older than a cutoff."""
    from tutorloop.privacy.erasure import parse_duration, purge

    report = purge(open_warehouse(settings_of(ctx)), parse_duration(older_than), dry_run=dry_run)
    if json_out:
        print_json(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(f"rows stored before {report.cutoff} ({verb}):")
    table = Table("table", "rows")
    for name, count in report.deleted.items():
        table.add_row(name, str(count))
    console.print(table)


@privacy_app.command("corpus")
def corpus_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write", dir_okay=False),
    n: int = typer.Option(1000, "--n", min=1, help="number of records"),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option(
        "development",
        "--split",
        help="development (tuned on), seen (the first held-out split, retired) or held-out",
    ),
) -> None:
    """Generate a synthetic span-annotated PII corpus (Faker, several locales)."""
    from tutorloop.privacy import eval_corpus, heldout_corpus, seen_corpus

    corpora = {"development": eval_corpus, "seen": seen_corpus, "held-out": heldout_corpus}
    if split not in corpora:
        fail(f"unknown split {split!r}: expected development, seen or held-out", 2)
    records = corpora[split].generate(n, seed)
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    console.print(f"wrote {len(records)} records to {out}")


@privacy_app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="JSON list of {full_text, spans:[...]} records"),
    scrubber: str = typer.Option("presidio", "--scrubber", help="presidio or regex"),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="also measure Presidio's default configuration"
    ),
    json_out: bool = JSON_OUT,
) -> None:
    """Recall per type, character recall/precision and texts/s of a scrubber."""
    from tutorloop.privacy.evaluation import evaluate, load_records, presidio_default_spans
    from tutorloop.privacy.scrubbing import configured_scrubber

    records = load_records(file)
    if scrubber not in ("presidio", "regex"):
        fail(f"unknown scrubber {scrubber!r}: expected presidio or regex", 2)
    privacy = settings_of(ctx).privacy.model_copy(update={"scrubber": scrubber})
    ours = configured_scrubber(privacy)
    reports = [evaluate(f"tutorloop {scrubber}", records, ours.spans_batch)]
    if baseline:
        reports.append(evaluate("presidio default", records, presidio_default_spans()))
    if json_out:
        print_json([r.to_dict() for r in reports])
        return
    types = sorted({t for r in reports for t in r.per_type_recall})
    table = Table("metric", *(r.name for r in reports))
    table.add_row("records", *(str(r.records) for r in reports))
    table.add_row("texts/s", *(f"{r.texts_per_s:.0f}" for r in reports))
    table.add_row("char recall", *(f"{r.char_recall:.3f}" for r in reports))
    table.add_row("char precision", *(f"{r.char_precision:.3f}" for r in reports))
    for t in types:
        table.add_row(f"recall {t}", *(f"{r.per_type_recall.get(t, 0):.3f}" for r in reports))
    console.print(table)


_MAX_LINE_CHARS = 100_000


def _read_lines(source: Path | None) -> list[str]:
    """UTF-8 lines from a file or stdin; a clear error for empty, binary or huge input."""
    import sys

    name = str(source) if source else "stdin"
    try:
        raw = source.read_bytes() if source else sys.stdin.buffer.read()
    except OSError as exc:
        fail(f"cannot read {name}: {exc.strerror or exc}")
    if not raw.strip():
        fail(f"no text to scrub: {name} is empty")
    if b"\x00" in raw:
        fail(f"{name} is binary, not text (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{name} is not UTF-8 text (byte {exc.start})")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if len(line) > _MAX_LINE_CHARS:
            fail(
                f"line {number} of {name} has {len(line):,} characters; at most {_MAX_LINE_CHARS:,}"
            )
    return lines


@privacy_app.command("scrub")
def scrub_cmd(
    ctx: typer.Context,
    source: Path | None = typer.Argument(
        None, dir_okay=False, help="text file, one text per line (default: stdin)"
    ),
    json_out: bool = typer.Option(
        False, "--json", help="one JSON object per line: scrubbed text, findings, spans"
    ),
) -> None:
    """Scrub texts with the configured scrubber, as the stream worker would: check any text."""
    from tutorloop.privacy.scrubbing import configured_scrubber

    lines = _read_lines(source)
    scrubber = configured_scrubber(settings_of(ctx).privacy)
    texts = [line for line in lines if line.strip()]
    results = iter(scrubber.scrub_batch(texts))
    spans = iter(scrubber.spans_batch(texts) if json_out else [])
    out = []
    for line in lines:
        if not line.strip():
            out.append(
                json.dumps({"text": line, "findings": {}, "spans": []}) if json_out else line
            )
            continue
        result = next(results)
        if json_out:
            found = [{"start": s, "end": e, "entity": k} for s, e, k in next(spans)]
            out.append(
                json.dumps({"text": result.text, "findings": result.findings, "spans": found})
            )
        else:
            out.append(result.text)
    typer.echo("\n".join(out))
