"""The demo's results: a table on the terminal, ``results.json`` and an HTML report with plots."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich import box
from rich.table import Table

from tutorloop.evaluation.metrics import reliability
from tutorloop.infra.cli_common import console

if TYPE_CHECKING:
    from tutorloop.demo.holdout import OpenSetResult
    from tutorloop.demo.results import DemoOptions, DemoResult


def print_table(result: DemoResult) -> None:
    table = Table(
        "week", "model", "new", "acc", "F1", "ECE", "AURC", "p95ms", "human", "teacher",
        "labels", "calls", "eps", title="tutorloop demo (test-set metrics of the champion)",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for r in result.rows:
        table.add_row(
            str(r.cycle), r.champion, "yes" if r.promoted else "no", f"{r.accuracy:.3f}",
            f"{r.macro_f1:.3f}", f"{r.ece:.3f}", f"{r.aurc:.3f}",
            f"{r.p95_ms:.1f}" if r.p95_ms is not None else "",
            str(r.labels_human), str(r.labels_teacher), str(r.labels_acquired),
            str(r.teacher_calls), f"{r.epsilon:g}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "human / teacher: rows of that cycle's training set; labels, calls: acquired so far",
        style="dim",
    )
    gap = f"{100 * result.gap_closed:.0f}%" if result.gap_closed is not None else "n/a"
    console.print(
        f"teacher test accuracy {result.teacher_accuracy:.4f}; seed student "
        f"{result.seed_accuracy:.4f}; gap closed after {len(result.rows) - 1} cycle(s): {gap}; "
        f"{result.seconds:.0f} s"
    )
    for r in result.rows:
        if r.note:
            console.print(f"cycle {r.cycle}: {r.note}")
    for check in result.spot_checks:
        if check["label"] is None:
            agreed = f"{check['agreed']}/{check['checked']} ({check['rate']:.3f})"
            console.print(f"spot checks of {check['teacher_id']}: reviewers agreed on {agreed}")
    for r in result.rows:
        if r.accuracy_without_memory is not None:
            console.print(f"cycle {r.cycle}: accuracy {r.accuracy:.4f} with its retrieval "
                          f"memory, {r.accuracy_without_memory:.4f} without")  # fmt: skip
        if r.open_set is not None:
            console.print(f"cycle {r.cycle} open intent: {_open_set_line(r.open_set)}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _open_set_line(o: OpenSetResult) -> str:
    return (
        f"AUROC {_num(o.auroc)} (max-softmax {o.auroc_msp:.3f}); at the served thresholds: "
        f"open-set scorer OOS recall {_num(o.oos_recall)} with in-scope accuracy "
        f"{_num(o.accuracy_abstaining)}, max-softmax {o.oos_recall_msp:.3f} / "
        f"{o.accuracy_abstaining_msp:.3f}"
    )


def _open_set_section(result: DemoResult) -> str:
    rows = [r for r in result.rows if r.open_set is not None]
    if not rows:
        return ""
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.cycle, r.champion, _num(o.auroc), f"{o.auroc_msp:.3f}", _num(o.oos_recall),
            _num(o.accuracy_abstaining), f"{o.oos_recall_msp:.3f}",
            f"{o.accuracy_abstaining_msp:.3f}", f"{r.accuracy:.3f}",
        )) + "</tr>"
        for r in rows
        for o in [r.open_set]
        if o is not None
    )  # fmt: skip
    unknown = ", ".join(result.unknown_intents)
    return (
        f"<h2>Open-intent detection</h2><p>{len(result.unknown_intents)} intents left out of "
        f"every stage and tested as out of scope: {html.escape(unknown)}. The open-set scorer "
        "is each champion's own (relative Mahalanobis, threshold fitted at export on its "
        "validation rows); max-softmax uses serving.abstain_below. In-scope accuracy counts an "
        "abstention as wrong.</p><table><tr><th>cycle</th><th>champion</th><th>AUROC open-set"
        "</th><th>AUROC max-softmax</th><th>OOS recall (open-set)</th><th>in-scope acc. "
        "(open-set)</th><th>OOS recall (max-softmax)</th><th>in-scope acc. (max-softmax)</th>"
        f"<th>in-scope acc. (no abstention)</th></tr>{cells}</table>"
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(result: DemoResult, out: Path) -> dict[str, str]:
    # The headless backend must be chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    # Cumulative labels are the cost axis; a cycle's training set shrinks when replay does.
    xs = [r.labels_acquired for r in result.rows]
    ax.plot(xs, [r.accuracy for r in result.rows], marker="o", label="student (champion)")
    ax.axhline(result.teacher_accuracy, color="tab:green", linestyle="--", label="teacher")
    ax.axhline(result.seed_accuracy, color="tab:gray", linestyle=":", label="seed student")
    for r in result.rows:
        ax.annotate(f"c{r.cycle}", (r.labels_acquired, r.accuracy), textcoords="offset points",
                    xytext=(4, -12))  # fmt: skip
    ax.set_xlabel("labels acquired so far (gold seed + human + teacher)")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right")
    ax.set_title("accuracy against labels acquired")
    images["accuracy"] = _png(fig)
    fig.savefig(out / "accuracy_vs_labels.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    if result.probs is not None:
        known = result.targets >= 0
        table = reliability(result.probs[known], result.targets[known])
        fig, ax = plt.subplots(figsize=(5, 5))
        centers = [(a + b) / 2 for a, b in zip(table.bin_edges, table.bin_edges[1:], strict=False)]
        ax.bar(centers, table.accuracy, width=1 / len(centers), edgecolor="black", alpha=0.7,
               label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("reliability diagram, final champion (15 bins)")
        ax.legend(loc="upper left")
        images["reliability"] = _png(fig)
        fig.savefig(out / "reliability.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    final = result.rows[-1].open_set if result.rows else None
    if final is not None and final.in_scope_scores:
        fig, ax = plt.subplots(figsize=(6, 4))
        both = final.in_scope_scores + final.out_of_scope_scores
        bins = np.linspace(np.percentile(both, 1), np.percentile(both, 99), 40).tolist()
        ax.hist(np.clip(final.in_scope_scores, bins[0], bins[-1]), bins=bins, alpha=0.6,
                density=True, label="in scope (known intents)")  # fmt: skip
        ax.hist(np.clip(final.out_of_scope_scores, bins[0], bins[-1]), bins=bins, alpha=0.6,
                density=True, label="out of scope (held-out intents)")  # fmt: skip
        if final.threshold is not None:
            ax.axvline(final.threshold, color="black", linestyle="--", label="served threshold")
        ax.set_xlabel("open-set score of the final champion (higher: more in scope)")
        ax.set_ylabel("density")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"open-set scores, AUROC {_num(final.auroc)}")
        images["open_set"] = _png(fig)
        fig.savefig(out / "open_set_scores.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.5))
    for r in result.rows:
        color = "tab:green" if r.promoted else "tab:red"
        ax.scatter(r.cycle, 0, color=color, s=120, zorder=3)
        label = f"{r.candidate or r.champion}\n{'promoted' if r.promoted else 'kept ' + r.champion}"
        ax.annotate(label, (r.cycle, 0), textcoords="offset points", xytext=(0, 12),
                    ha="center", fontsize=8)  # fmt: skip
    ax.plot([r.cycle for r in result.rows], [0] * len(result.rows), color="gray", zorder=1)
    ax.set_yticks([])
    ax.set_xticks([r.cycle for r in result.rows])
    ax.set_xlabel("cycle (week)")
    ax.set_title("promotion timeline")
    ax.set_ylim(-1, 1.5)
    images["timeline"] = _png(fig)
    fig.savefig(out / "timeline.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return images


def _spot_check_section(result: DemoResult, worst: int = 10) -> str:
    """Teacher-vs-reviewer agreement on the resolved spot checks: per teacher, then the labels
    (as the teacher gave them, at least 3 checks) reviewers agreed with least."""
    if not result.spot_checks:
        return ""

    def cells(r: dict[str, Any]) -> str:
        ci = "" if r["lower"] is None else f"{r['lower']:.3f} - {r['upper']:.3f}"
        values = (r["teacher_id"], r["label"] or "(all)", r["checked"], r["agreed"],
                  f"{r['rate']:.3f}", ci)  # fmt: skip
        return "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>"

    overall = [r for r in result.spot_checks if r["label"] is None]
    labels = [r for r in result.spot_checks if r["label"] is not None and r["checked"] >= 3]
    return (
        f"<h2>Spot checks</h2><p>{result.spot_checks_resolved} spot checks resolved by the "
        "demo's reviewers (the traffic's true labels): a case-hash sample of "
        "teacher.spot_check_fraction of the captured cases each teacher labeled, whatever its "
        "confidence. Captured cases are the ones the student was unsure of, so agreement here "
        f"is expected below the teacher's test accuracy ({result.teacher_accuracy:.3f}). "
        f"Per teacher, then the {worst} labels the teacher gave that reviewers agreed with "
        "least (at least 3 checks); intervals are Wilson 95%.</p><table><tr><th>teacher</th>"
        "<th>label given</th><th>checked</th><th>agreed</th><th>agreement</th><th>interval</th>"
        f"</tr>{''.join(cells(r) for r in overall + labels[:worst])}</table>"
    )


def _drift_table(windows: list[dict[str, Any]]) -> str:
    """Serving's drift windows (``tutorloop monitor``): each week's traffic against the
    reference window of the champion that served it."""
    if not windows:
        return ""

    def num(value: Any) -> str:
        return "" if value is None else f"{value:.3f}"

    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            str(w["window_end"])[:19], w["model_version"], w["requests"],
            num(w["mean_confidence"]), num(w["abstention_rate"]),
            f"{num(w['confidence_psi'])} ({num(w['confidence_psi_null'])})",
            f"{num(w['label_psi'])} ({num(w['label_psi_null'])})",
            "" if w["confidence_ks_p"] is None else f"{w['confidence_ks_p']:.2g}",
            "breach" if w["breached"] else "",
        )) + "</tr>"
        for w in windows
    )  # fmt: skip
    return (
        "<h2>Drift of the served traffic</h2><p>Each window against the first predictions "
        "its champion served; in parentheses the PSI chance alone reaches 1% of the time.</p>"
        "<table><tr><th>window end</th><th>model</th><th>predictions</th><th>confidence</th>"
        "<th>abstained</th><th>PSI confidence</th><th>PSI labels</th><th>KS p</th>"
        f"<th>drift</th></tr>{rows}</table>"
    )


def write_report(result: DemoResult, options: DemoOptions) -> Path:
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "rows": [asdict(r) for r in result.rows],
        "teacher_accuracy": result.teacher_accuracy,
        "seed_accuracy": result.seed_accuracy,
        "gap_closed": result.gap_closed,
        "seconds": result.seconds,
        "unknown_intents": result.unknown_intents,
        "spot_checks": result.spot_checks,
        "history": result.history,
        "options": {k: str(v) for k, v in vars(options).items()},
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    images = _plots(result, out)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.cycle, r.champion, "yes" if r.promoted else "no",
            f"{r.accuracy:.4f}" + ("" if r.accuracy_without_memory is None
                                   else f" ({r.accuracy_without_memory:.4f})"),
            f"{r.macro_f1:.4f}", f"{r.ece:.4f}", f"{r.aurc:.4f}", f"{r.selective_accuracy:.4f}",
            "" if r.p95_ms is None else f"{r.p95_ms:.2f}", r.labels_human, r.labels_teacher,
            r.labels_acquired, r.teacher_calls, f"{r.epsilon:g}", r.note,
        )) + "</tr>"
        for r in result.rows
    )  # fmt: skip
    gap = "n/a" if result.gap_closed is None else f"{100 * result.gap_closed:.0f}%"
    drift = _drift_table(result.drift)
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{data}" alt="{name}"></figure>'
        for name, data in images.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tutorloop demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block}}</style>
</head><body><h1>tutorloop demo</h1>
<p>Data: {html.escape(str(options.data))}; test: {html.escape(str(options.test))};
{len(result.rows) - 1} weekly cycle(s); {result.seconds:.0f} s.</p>
<p>Teacher test accuracy <b>{result.teacher_accuracy:.4f}</b>; seed student
<b>{result.seed_accuracy:.4f}</b>; share of the seed-to-teacher gap closed: <b>{gap}</b>.</p>
<table><tr><th>cycle</th><th>champion</th><th>promoted</th><th>accuracy (without its
retrieval memory)</th><th>macro-F1</th>
<th>ECE</th><th>AURC</th><th>selective acc.</th><th>p95 ms</th><th>human rows trained</th>
<th>teacher rows trained</th><th>labels acquired (cumulative)</th>
<th>teacher calls (cumulative)</th><th>epsilon</th><th>note</th></tr>{rows}</table>
{figures}{_spot_check_section(result)}{_open_set_section(result)}{drift}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
