"""`tutorloop teacher ...` and `tutorloop dataset import`: teachers, relabeling, review, gold."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import typer
from rich.table import Table

from tutorloop.infra.cli_common import (
    JSON_OUT,
    LABEL_COLUMN,
    LABELED_CSV,
    TEXT_COLUMN,
    console,
    fail,
    print_json,
    settings_of,
)
from tutorloop.infra.tables import ReviewReason
from tutorloop.infra.warehouse_backends import open_warehouse

teacher_app = typer.Typer(help="Teachers: fit and evaluate the local one, relabel, review.")


@teacher_app.command("fit")
def fit_cmd(
    ctx: typer.Context,
    data: Path = LABELED_CSV,
    text_col: str = TEXT_COLUMN,
    label_col: str | None = LABEL_COLUMN,
    encoder: str = typer.Option("", "--encoder", help="default: teacher.encoder"),
    json_out: bool = JSON_OUT,
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
            knn_weight=settings.teacher.knn_weight,
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
    data: Path = LABELED_CSV,
    text_col: str = TEXT_COLUMN,
    label_col: str | None = LABEL_COLUMN,
    json_out: bool = JSON_OUT,
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
    json_out: bool = JSON_OUT,
) -> None:
    """Label every captured case the configured teacher has not labeled yet.

    Exits non-zero only when there was something to label and nothing could be labeled.
    """
    from tutorloop.infra.progress import progress_bar
    from tutorloop.labeling.relabel import queue_unlabeled_for_humans, relabel
    from tutorloop.labeling.teachers import build_teacher

    settings = settings_of(ctx)
    warehouse = open_warehouse(settings)
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
            spot_check=settings.teacher.spot_check_fraction,
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
            f"{report.review_items} new review items ({report.spot_checks} spot checks); "
            f"{report.tokens} tokens, "
            f"${report.cost_usd:.4f}"
        )
    if report.pending and not report.labeled:
        fail(f"no case could be labeled ({report.failed} failures; see teacher_errors)")


@teacher_app.command("synthesize")
def synthesize_cmd(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Ask the LLM teacher for paraphrases and contrast edits of its least sure captured cases
    (``teacher.synthesis``), then label them. The cycle does this when synthesis is enabled."""
    from tutorloop.infra.progress import progress_bar
    from tutorloop.labeling.synthesis import write_and_label
    from tutorloop.labeling.teachers import build_teacher

    settings = settings_of(ctx)
    if settings.teacher.backend != "openai":
        fail("synthetic cases need an LLM teacher: set teacher.backend = 'openai'")
    warehouse = open_warehouse(settings)
    teacher = build_teacher(settings, warehouse)
    assert teacher is not None
    with progress_bar("writing and labeling synthetic cases", None) as advance:
        report = write_and_label(settings, warehouse, teacher, advance)
    if json_out:
        print_json(report)
        return
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(report["rejected"].items())) or "none"
    console.print(
        f"{report['generator_id']}: {report['written']} synthetic cases from "
        f"{report['sources']} sources ({report['failed_calls']} failed calls; rejected: "
        f"{rejected}); {report['relabel']['labeled']} labeled by the teacher; "
        f"{report['tokens']} tokens, ${report['cost_usd']:.4f}"
    )


@teacher_app.command("review")
def review_cmd(
    ctx: typer.Context,
    status: str = typer.Option("open", "--status", help="open, resolved or all"),
    limit: int = typer.Option(50, "--limit", min=1),
    json_out: bool = JSON_OUT,
) -> None:
    """The review queue: teacher/human disagreements, low-confidence answers, unlabeled cases,
    spot checks.

    An open spot check does not show the teacher's answer: the reviewer decides unanchored,
    so that agreement (`teacher agreement`) measures the teacher, not the reviewer's trust.
    """

    if status not in ("open", "resolved", "all"):
        fail(f"--status must be open, resolved or all, got {status!r}", 2)
    where = "" if status == "all" else "WHERE r.status = ?"
    params: list[object] = [] if status == "all" else [status]
    rows = open_warehouse(settings_of(ctx)).query_dicts(
        "SELECT r.item_id, r.case_id, r.reason, r.teacher_label, r.teacher_confidence,"
        " r.human_label, r.status, r.resolved_label, r.created_at, c.text"
        f" FROM review_queue r LEFT JOIN cases c USING (case_id) {where}"
        " ORDER BY r.created_at, r.item_id LIMIT ?",
        [*params, limit],
    )
    for row in rows:
        if row["reason"] == ReviewReason.SPOT_CHECK and row["status"] == "open":
            row["teacher_label"] = row["teacher_confidence"] = None
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


@teacher_app.command("agreement")
def agreement_cmd(
    ctx: typer.Context,
    by_label: bool = typer.Option(False, "--by-label", help="also per label the teacher gave"),
    json_out: bool = JSON_OUT,
) -> None:
    """How often reviewers agree with each teacher on resolved spot checks (Wilson 95%)."""
    from tutorloop.labeling.agreement import spot_check_agreement

    rows = [
        a
        for a in spot_check_agreement(open_warehouse(settings_of(ctx)))
        if by_label or a.label is None
    ]
    if json_out:
        print_json([a.to_dict() for a in rows])
        return
    if not rows:
        console.print(
            "no resolved spot checks yet (teacher.spot_check_fraction sends a sample of "
            "teacher labels to `teacher review`)"
        )
        return
    table = Table("teacher", "label", "checked", "agreed", "rate", "95% interval")
    for a in rows:
        ci = a.interval()
        table.add_row(
            a.teacher_id, a.label or "(all)", str(a.checked), str(a.agreed),
            f"{ci.value:.3f}", f"{ci.lower:.3f} - {ci.upper:.3f}",
        )  # fmt: skip
    console.print(table)


@teacher_app.command("resolve")
def resolve_cmd(
    ctx: typer.Context,
    item: str = typer.Argument(..., help="review item id (or a unique prefix)"),
    label: str = typer.Option(..., "--label", help="the correct label"),
    actor: str = typer.Option("", "--actor", help="who decided; default: the OS user"),
) -> None:
    """Resolve a review item with a human label (recorded as gold for its case)."""
    from tutorloop.labeling.review import resolve
    from tutorloop.labeling.teachers import label_set

    settings = settings_of(ctx)
    warehouse = open_warehouse(settings)
    if label not in label_set(settings, warehouse):
        fail(f"unknown label {label!r}: not in the label set")
    item_id = resolve(warehouse, item, label, actor or getpass.getuser())
    console.print(f"resolved {item_id} as {label}")


def import_cmd(
    ctx: typer.Context,
    data: Path = LABELED_CSV,
    text_col: str = TEXT_COLUMN,
    label_col: str | None = LABEL_COLUMN,
    source: str = typer.Option("", "--source", help="name recorded in lineage; default: file"),
    actor: str = typer.Option("", "--actor", help="who labeled it; default: the OS user"),
    for_eval: bool = typer.Option(
        False, "--eval", help="the fixed gold evaluation set: never trained on"
    ),
    private: bool = typer.Option(
        False, "--private", help="rows derived from users: DP-SGD spends epsilon on them"
    ),
    json_out: bool = JSON_OUT,
) -> None:
    """Import labeled rows as scrubbed cases with human labels (gold seed, reviewed data).

    Imported rows are public for differential privacy unless marked ``--private``."""
    from tutorloop.labeling.gold import import_gold
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.privacy.scrubbing import configured_scrubber

    settings = settings_of(ctx)
    rows = read_labeled_csv(data, text_col, label_col)
    report = import_gold(
        open_warehouse(settings),
        rows,
        configured_scrubber(settings.privacy),
        source=source or data.name,
        actor=actor or getpass.getuser(),
        for_eval=for_eval,
        private=private,
    )
    if json_out:
        print_json({k: v for k, v in vars(report).items() if k != "case_ids"})
        return
    console.print(
        f"imported {report.rows} rows from {report.source}: {report.cases_added} new cases, "
        f"{report.labels_added} new human labels"
    )
