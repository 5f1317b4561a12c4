"""Benchmark: label QA on teacher labels (confident learning) on and off, in one retrain.

Usage:
    python bench/label_filter.py [--variants off,confident_learning,min_confidence:0.5]
                                 [--seeds 0,1,2] [--seed-cache DIR]

The set-up of ``bench/representation.py`` (the split of ``bench/dp.py``): the seed student, a
reference teacher as strong as the demo's (all-mpnet-base-v2 + a logistic head on 39 other rows
per intent), a week of traffic captured by the default policy and labeled by the teacher. The
captured rows' true labels are known (they come from the train file), so each filter's drops
are scored as label-error detection: how many it dropped, how many of those the teacher had
wrong, and how many of the teacher's errors it caught. Then, per variant and trainer seed, the
student retrains from the seed on the rows the filter kept; accuracy on the test file.

Variants: ``off``; ``confident_learning`` (``trainer.label_filter``, the cycle's own function
on the warm-start student); ``min_confidence:T`` (``dataset.min_teacher_confidence``: drop
teacher labels whose top probability is below T, the teacher's self-agreement).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dp import _dataset, _score, bench_parser, bench_setup  # the same split
from representation import labeled_week
from rich.console import Console
from rich.table import Table

from tutorloop.trainer.label_filter import filter_teacher_labels
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student

console = Console()


def _filtered(variant: str, student: Any, data: Any, seed: int) -> Any:
    if variant == "confident_learning":
        kept, _ = filter_teacher_labels(student, data, variant, seed=seed, dp=False)
        return kept
    if variant.startswith("min_confidence:"):
        floor = float(variant.partition(":")[2])
        return data.filter(lambda r: r["source"] != "teacher" or max(r["soft_targets"]) >= floor)
    if variant == "off":
        return data
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--teacher-per-label", type=int, default=39)
    parser.add_argument("--variants", default="off,confident_learning,min_confidence:0.5")
    parser.add_argument("--seeds", default="0,1,2", help="trainer seeds (same data)")
    args = parser.parse_args()
    args.private = args.pool  # dp.py's split: the seed rows, then --private (here: pool) rows
    labels, rows, test, settings, cfg, base = bench_setup(args)
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-labelqa-"))
    try:
        week = labeled_week(args, (labels, rows, test, settings, cfg, base), tmp)
        seed_dir, seed_score, teacher_acc = week.seed_dir, week.seed_score, week.teacher_accuracy
        captured, labeled = week.captured, week.labeled
        true_label = {r["text"]: r["label"] for r in rows if r["private"]}
        wrong = {r["case_id"] for r in labeled if r["label"] != true_label[r["text"]]}
        data = _dataset([r for r in rows if not r["private"]] + labeled, labels)
        console.print(f"seed {seed_score['accuracy']:.3f}, teacher {teacher_acc:.3f}, "
                      f"{len(captured)} captured, {len(wrong)} teacher labels wrong")  # fmt: skip
        results = []
        for trainer_seed in (int(s) for s in args.seeds.split(",")):
            run_cfg = cfg.model_copy(update={"seed": trainer_seed})
            for variant in args.variants.split(","):
                student = load_student(base, labels, run_cfg, init_adapter=seed_dir / "adapter")
                started = time.perf_counter()
                kept = _filtered(variant, student, data, trainer_seed)
                dropped = set(data["case_id"]) - set(kept["case_id"])
                outcome = train_student(student, kept, run_cfg)
                score = _score(student, outcome.temperature, test, labels)
                results.append({
                    "variant": variant, "seed": trainer_seed, **score,
                    "dropped": len(dropped), "dropped_wrong": len(dropped & wrong),
                    "wall_s": round(time.perf_counter() - started),
                })  # fmt: skip
                console.print(results[-1])
        _report(results, seed_score, teacher_acc, len(captured), len(wrong), args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(
    results: list[dict[str, Any]], seed: dict[str, Any], teacher: float, captured: int,
    wrong: int, args: argparse.Namespace,
) -> None:  # fmt: skip
    off = {r["seed"]: r["accuracy"] for r in results if r["variant"] == "off"}
    table = Table("variant", "dropped (teacher wrong)", "precision / recall", "accuracy per seed",
                  "median", "vs off, per seed (pts)", title=f"seed {seed['accuracy']:.3f}, "
                  f"teacher {teacher:.3f}, {captured} captured, {wrong} wrong")  # fmt: skip
    for variant in dict.fromkeys(r["variant"] for r in results):
        mine = [r for r in results if r["variant"] == variant]
        dropped = statistics.median(r["dropped"] for r in mine)
        hit = statistics.median(r["dropped_wrong"] for r in mine)
        table.add_row(
            variant, f"{dropped:.0f} ({hit:.0f})",
            f"{hit / dropped:.2f} / {hit / wrong:.2f}" if dropped else "-",
            " ".join(f"{r['accuracy']:.3f}" for r in mine),
            f"{statistics.median(r['accuracy'] for r in mine):.3f}",
            " ".join(f"{100 * (r['accuracy'] - off[r['seed']]):+.1f}" for r in mine
                     if r["seed"] in off),
        )  # fmt: skip
    console.print(table)
    summary = {"seed": seed, "teacher_accuracy": teacher, "captured": captured,
               "teacher_wrong": wrong, "runs": results}  # fmt: skip
    (args.out / "label_filter.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
