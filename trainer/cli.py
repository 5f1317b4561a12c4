"""`tutorloop teacher ...` and `tutorloop dataset ...`: relabeling, review, dataset versions."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import typer
from rich.table import Table

from tutorloop.infra.cli_common import console, fail, print_json, settings_of

teacher_app = typer.Typer(help="Teachers: fit and evaluate the local one, relabel, review.")
dataset_app = typer.Typer(help="Training datasets: import labeled data, build, list.")

_JSON = typer.Option(False, "--json", help="machine-readable output")
_DATA = typer.Option(..., "--data", help="CSV with a text and a label column", dir_okay=False)
_TEXT_COL = typer.Option("text", "--text-col", help="column holding the text")
_LABEL_COL = typer.Option(
    None, "--label-col", help="column holding the label (default: label, category or intent)"
)


@teacher_app.command("fit")
def fit_cmd(
    ctx: typer.Context,
    data: Path = _DATA,
    text_col: str = _TEXT_COL,
    label_col: str | None = _LABEL_COL,
    encoder: str = typer.Option("", "--encoder", help="default: teacher.encoder"),
    json_out: bool = _JSON,
) -> None:
    """Fit the local teacher (embeddings + logistic head) on a labeled pool."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.labeling.labeled_csv import read_labeled_csv

    settings = settings_of(ctx)
    rows = read_labeled_csv(data, text_col, label_col)
    from tutorloop.labeling.teacher_local import (
        fit_local_teacher,  # torch: only once the input is good
    )

    started = time.monotonic()
    with progress_bar("embedding teacher pool", len(rows)) as advance:
        report = fit_local_teacher(
            rows,
            settings.teacher_path,
            encoder=encoder or settings.teacher.encoder,
            models_dir=settings.models_dir,
            on_batch=advance,
        )
    result = {
        "folder": str(report.folder),
        "version": report.version,
        "examples": report.n_examples,
        "labels": report.n_labels,
        "train_accuracy": round(report.train_accuracy, 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    if json_out:
        print_json(result)
        return
    console.print(
        f"fitted local teacher {report.version} on {report.n_examples} examples, "
        f"{report.n_labels} labels (train accuracy {report.train_accuracy:.3f}) "
        f"in {result['seconds']} s → {report.folder}"
    )


@teacher_app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    data: Path = _DATA,
    text_col: str = _TEXT_COL,
    label_col: str | None = _LABEL_COL,
    json_out: bool = _JSON,
) -> None:
    """Accuracy, macro-F1 and ECE of the local teacher on a labeled CSV."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.labeling.teacher_local import LocalTeacher

    settings = settings_of(ctx)
    rows = read_labeled_csv(data, text_col, label_col)
    teacher = LocalTeacher(settings.teacher_path, settings.models_dir)
    with progress_bar("evaluating teacher", len(rows)) as advance:
        q, unknown = teacher.evaluate(rows, on_batch=advance)
    result = {"teacher": teacher.info.teacher_id, "unknown_labels": unknown, **q.to_dict()}
    if json_out:
        print_json(result)
        return
    table = Table("metric", "value", title=f"teacher {teacher.info.version} on {data.name}")
    for key in ("n", "accuracy", "macro_f1", "ece", "aurc", "selective_accuracy"):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("rows with a label the teacher does not know", str(unknown))
    console.print(table)


@teacher_app.command("relabel")
def relabel_cmd(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, "--limit", min=1, help="label at most N cases"),
    json_out: bool = _JSON,
) -> None:
    """Label every captured case the configured teacher has not labeled yet.

    Exits non-zero only when there was something to label and nothing could be labeled.
    """
    from tutorloop.infra.progress import progress_bar
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.labeling.relabel import queue_unlabeled_for_humans, relabel
    from tutorloop.labeling.teachers import build_teacher

    settings = settings_of(ctx)
    warehouse = Warehouse.from_settings(settings)
    teacher = build_teacher(settings, warehouse)
    if teacher is None:
        queued = queue_unlabeled_for_humans(warehouse)
        if json_out:
            print_json({"teacher_id": "human", "queued_for_review": queued})
        else:
            console.print(f"teacher backend is human: {queued} cases queued for review")
        return
    with progress_bar("relabeling", None) as advance:
        report = relabel(
            warehouse,
            teacher,
            batch_size=settings.teacher.batch_size,
            review_below=settings.teacher.review_below,
            limit=limit,
            on_batch=advance,
        )
    if json_out:
        print_json(report.to_dict())
    else:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(report.failures.items())) or "none"
        console.print(
            f"{report.teacher_id}: {report.labeled}/{report.pending} labeled "
            f"({report.from_cache} from cache, {report.calls} calls), failed: {failures}; "
            f"{report.review_items} new review items; {report.tokens} tokens, "
            f"${report.cost_usd:.4f}"
        )
    if report.pending and not report.labeled:
        fail(f"no case could be labeled ({report.failed} failures; see teacher_errors)")


@teacher_app.command("review")
def review_cmd(
    ctx: typer.Context,
    status: str = typer.Option("open", "--status", help="open, resolved or all"),
    limit: int = typer.Option(50, "--limit", min=1),
    json_out: bool = _JSON,
) -> None:
    """The review queue: teacher/human disagreements, low-confidence answers, unlabeled cases."""
    from tutorloop.infra.warehouse import Warehouse

    if status not in ("open", "resolved", "all"):
        fail(f"--status must be open, resolved or all, got {status!r}", 2)
    where = "" if status == "all" else "WHERE r.status = ?"
    params: list[object] = [] if status == "all" else [status]
    rows = Warehouse.from_settings(settings_of(ctx)).query_dicts(
        "SELECT r.item_id, r.case_id, r.reason, r.teacher_label, r.teacher_confidence,"
        " r.human_label, r.status, r.resolved_label, r.created_at, c.text"
        f" FROM review_queue r LEFT JOIN cases c USING (case_id) {where}"
        " ORDER BY r.created_at, r.item_id LIMIT ?",
        [*params, limit],
    )
    if json_out:
        print_json(rows)
        return
    table = Table("item", "reason", "teacher", "conf", "human", "status", "text (scrubbed)")
    for row in rows:
        conf = row["teacher_confidence"]
        table.add_row(
            row["item_id"][:12],
            row["reason"],
            row["teacher_label"] or "",
            f"{conf:.2f}" if conf is not None else "",
            row["human_label"] or row["resolved_label"] or "",
            row["status"],
            (row["text"] or "")[:60],
        )
    console.print(table)
    console.print(f"{len(rows)} items ({status})")


@teacher_app.command("resolve")
def resolve_cmd(
    ctx: typer.Context,
    item: str = typer.Argument(..., help="review item id (or a unique prefix)"),
    label: str = typer.Option(..., "--label", help="the correct label"),
    actor: str = typer.Option("", "--actor", help="who decided; default: the OS user"),
) -> None:
    """Resolve a review item with a human label (recorded as gold for its case)."""
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.labeling.review import resolve
    from tutorloop.labeling.teachers import label_set

    settings = settings_of(ctx)
    warehouse = Warehouse.from_settings(settings)
    if label not in label_set(settings, warehouse):
        fail(f"unknown label {label!r}: not in the label set")
    item_id = resolve(warehouse, item, label, actor or getpass.getuser())
    console.print(f"resolved {item_id} as {label}")


@dataset_app.command("import")
def import_cmd(
    ctx: typer.Context,
    data: Path = _DATA,
    text_col: str = _TEXT_COL,
    label_col: str | None = _LABEL_COL,
    source: str = typer.Option("", "--source", help="name recorded in lineage; default: file"),
    actor: str = typer.Option("", "--actor", help="who labeled it; default: the OS user"),
    for_eval: bool = typer.Option(
        False, "--eval", help="the fixed gold evaluation set: never trained on"
    ),
    json_out: bool = _JSON,
) -> None:
    """Import labeled rows as scrubbed cases with human labels (gold seed, reviewed data)."""
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.labeling.gold import import_gold
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.privacy.scrubber import configured_scrubber

    settings = settings_of(ctx)
    rows = read_labeled_csv(data, text_col, label_col)
    report = import_gold(
        Warehouse.from_settings(settings),
        rows,
        configured_scrubber(settings.privacy),
        source=source or data.name,
        actor=actor or getpass.getuser(),
        for_eval=for_eval,
    )
    if json_out:
        print_json({k: v for k, v in vars(report).items() if k != "case_ids"})
        return
    console.print(
        f"imported {report.rows} rows from {report.source}: {report.cases_added} new cases, "
        f"{report.labels_added} new human labels"
    )


@dataset_app.command("build")
def build_cmd(
    ctx: typer.Context,
    previous: str = typer.Option(
        "", "--previous", help="dataset hash to replay from; default: the champion's dataset"
    ),
    no_previous: bool = typer.Option(False, "--no-previous", help="treat every row as new"),
    json_out: bool = _JSON,
) -> None:
    """Build a dataset version from the warehouse (caps, eval set, dedup, replay, split)."""
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.labeling.teachers import label_set
    from tutorloop.registry.store import champion
    from tutorloop.trainer.dataset import DatasetSpec, build_dataset

    settings = settings_of(ctx)
    warehouse = Warehouse.from_settings(settings)
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
def list_cmd(ctx: typer.Context, json_out: bool = _JSON) -> None:
    """Dataset versions, newest first."""
    from tutorloop.infra.warehouse import Warehouse

    rows = Warehouse.from_settings(settings_of(ctx)).query_dicts(
        "SELECT dataset_hash, created_at, n_train, n_validation, n_eval, counts"
        " FROM dataset_versions ORDER BY created_at DESC"
    )
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


trainer_app = typer.Typer(help="The student: bootstrap, retrain now, or run the schedule.")


@trainer_app.command("bootstrap")
def bootstrap_cmd(
    ctx: typer.Context,
    data: Path = _DATA,
    text_col: str = _TEXT_COL,
    label_col: str | None = _LABEL_COL,
    per_label: int = typer.Option(
        10, "--per-label", min=1, help="gold examples per label taken from the CSV"
    ),
    seed: int = typer.Option(0, "--seed", help="which examples are taken"),
    json_out: bool = _JSON,
) -> None:
    """Train the first student from a gold seed set and register it as a candidate."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.loop.cycle import bootstrap, sample_per_label
    from tutorloop.loop.schedule import trainer_lock

    settings = settings_of(ctx)
    rows = sample_per_label(read_labeled_csv(data, text_col, label_col), per_label, seed)
    with trainer_lock(settings):
        report = bootstrap(
            settings,
            Warehouse.from_settings(settings),
            rows,
            source=f"seed:{data.name}:{per_label}:{seed}",
            actor=getpass.getuser(),
            progress=progress_bar,
        )
    _print_cycle(report.to_dict(), json_out)


@trainer_app.command("run")
def run_cmd(ctx: typer.Context, json_out: bool = _JSON) -> None:
    """One retrain now: relabel → dataset → train → register a candidate."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.infra.warehouse import Warehouse
    from tutorloop.loop.cycle import run_cycle
    from tutorloop.loop.schedule import trainer_lock

    settings = settings_of(ctx)
    with trainer_lock(settings):
        report = run_cycle(settings, Warehouse.from_settings(settings), progress=progress_bar)
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
            parts.append("all gates passed" + (", promoted" if gates["promoted"] else ""))
        else:
            parts.append(f"failed gates: {', '.join(gates['failed'])} (not promoted)")
    console.print("; ".join(parts))
