"""Benchmark: the learning-quality features of #16 on and off, each a whole demo run.

Usage:
    python bench/ablation.py [--variants defaults,no-spot-checks,...] [--quick] [--out DIR]

Every variant is ``tutorloop demo --holdout-intents 0.25`` (a quarter of the intents left out of
every stage and tested as out of scope) with the same data, seed and split, and one setting
changed through its ``TUTORLOOP_*`` variable:

- ``defaults``: the shipped settings (spot checks at 10%, no budget, memory and open-set off);
- ``no-spot-checks``: ``teacher.spot_check_fraction = 0``;
- ``open-set``: ``serving.open_set = true`` (abstain on inputs the scorer calls unknown);
- ``retrieval``: ``serving.retrieval = true`` (the kNN memory mixed into the prediction);
- ``representation``: ``trainer.representation_weight = --representation-weight`` (the
  student's embedding pulled toward the teacher's);
- ``label-filter``: ``trainer.label_filter = "confident_learning"`` (label QA before each
  retrain);
- ``budget-oldest`` / ``budget-margin-diverse``: ``teacher.label_budget`` = ``--budget`` per
  week, bought oldest first or by margin then k-center.

Prints one row per variant: the final champion's accuracy, macro-F1, ECE, AURC, share of the
seed-to-teacher gap closed, open-set AUROC (and max-softmax's), OOS recall and in-scope
accuracy at the served open-set threshold, labels acquired, teacher calls, spot checks and wall
time; writes ``ablation.json``. One run per variant: the demo takes minutes, and the spread of
one variant across seeds is in BENCHMARKS.md (about 2 points).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
console = Console()


def _variants(budget: int, representation: float = 1.0) -> dict[str, dict[str, str]]:
    env = "TUTORLOOP_"
    return {
        "defaults": {},
        "no-spot-checks": {f"{env}TEACHER__SPOT_CHECK_FRACTION": "0"},
        "open-set": {f"{env}SERVING__OPEN_SET": "true"},
        "retrieval": {f"{env}SERVING__RETRIEVAL": "true"},
        "representation": {f"{env}TRAINER__REPRESENTATION_WEIGHT": str(representation)},
        "label-filter": {f"{env}TRAINER__LABEL_FILTER": "confident_learning"},
        "budget-oldest": {f"{env}TEACHER__LABEL_BUDGET": str(budget),
                          f"{env}TEACHER__ACQUISITION": "oldest"},
        "budget-margin-diverse": {f"{env}TEACHER__LABEL_BUDGET": str(budget),
                                  f"{env}TEACHER__ACQUISITION": "margin_diverse"},
    }  # fmt: skip


def _run(name: str, extra: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / name
    command = [sys.executable, "-m", "tutorloop", "demo", "--out", str(out),
               "--holdout-intents", "0.25", *(["--quick"] if args.quick else [])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    env |= {"TUTORLOOP_DATA_DIR": str(out / "unused"), **extra}
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        console.print(f"[red]{name} failed[/]: {done.stderr[-2000:]}")
        return {"variant": name, "failed": True}
    results = json.loads((out / "results.json").read_text())
    final = results["rows"][-1]
    scored = final.get("open_set") or {}
    checks = [c for c in results.get("spot_checks", []) if c["label"] is None]
    row = {
        "variant": name, "settings": extra, "accuracy": final["accuracy"],
        "macro_f1": final["macro_f1"], "ece": final["ece"], "aurc": final["aurc"],
        "gap_closed": results["gap_closed"], "seed_accuracy": results["seed_accuracy"],
        "teacher_accuracy": results["teacher_accuracy"],
        "promoted": sum(r["promoted"] for r in results["rows"][1:]),
        "auroc": scored.get("auroc"), "auroc_msp": scored.get("auroc_msp"),
        "oos_recall": scored.get("oos_recall"),
        "accuracy_abstaining": scored.get("accuracy_abstaining"),
        "labels_acquired": final["labels_acquired"], "teacher_calls": final["teacher_calls"],
        "spot_checks": sum(c["checked"] for c in checks),
        "spot_check_agreement": checks[0]["rate"] if checks else None,
        "wall_s": round(wall),
    }  # fmt: skip
    console.print(row)
    return row


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(_variants(0)))
    parser.add_argument("--budget", type=int, default=400, help="labels per week")
    parser.add_argument("--representation-weight", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="the quick demo (a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ablation")
    args = parser.parse_args()
    known = _variants(args.budget, args.representation_weight)
    rows = []
    for name in args.variants.split(","):
        if name not in known:
            raise SystemExit(f"unknown variant {name!r}: one of {', '.join(known)}")
        rows.append(_run(name, known[name], args))
    table = Table("variant", "acc", "F1", "ECE", "AURC", "gap", "promoted", "AUROC (MSP)",
                  "OOS rec.", "acc. abst.", "labels", "calls", "spot checks (agree)",
                  "wall s")  # fmt: skip
    for r in rows:
        if r.get("failed"):
            table.add_row(r["variant"], "failed")
            continue
        table.add_row(
            r["variant"], _num(r["accuracy"]), _num(r["macro_f1"]), _num(r["ece"]),
            _num(r["aurc"]), _num(r["gap_closed"], 2), str(r["promoted"]),
            f"{_num(r['auroc'])} ({_num(r['auroc_msp'])})", _num(r["oos_recall"]),
            _num(r["accuracy_abstaining"]), str(r["labels_acquired"]), str(r["teacher_calls"]),
            f"{r['spot_checks']} ({_num(r['spot_check_agreement'])})", str(r["wall_s"]),
        )  # fmt: skip
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
