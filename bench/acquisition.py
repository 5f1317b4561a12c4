"""Benchmark: labels-to-accuracy of the acquisition policies against the capture threshold.

Usage:
    python bench/acquisition.py [--pool 3000] [--budgets 200,400,800] [--seed-cache DIR]

One run, same data for every point:
1. the seed student of ``bench/dp.py`` (10 labeled examples per intent from the train file,
   the same split and the same ``--seed-cache``, so one trained seed serves both benches);
2. a week of traffic: ``--pool`` other train rows in a random arrival order; the seed student
   scores them and the default capture policy keeps those below 0.6 confidence or 0.1 margin,
   plus a 1% random audit slice (what reaches the warehouse);
3. for each budget, each policy picks that many captured cases: ``oldest`` (the threshold
   policy: first come, first labeled), ``random`` (among captured), ``margin`` and
   ``margin_diverse`` (:mod:`tutorloop.labeling.acquisition`); they are labeled with their
   true labels (a perfect teacher, so that only the choice of cases differs), and the student
   retrains from the seed on the seed rows plus them, with the trainer defaults; plus one
   point with every captured case labeled (no budget);
4. each retrained student is scored on the test file (every ``--test-every``-th row).

Prints the table (accuracy gain over the seed, and each policy's difference from ``oldest`` at
the same budget, in points), writes ``acquisition_curve.png`` and ``acquisition.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dp import _dataset, _row, _score, _seed, bench_parser, bench_setup  # the same split
from rich.console import Console
from rich.table import Table

from tutorloop.labeling.acquisition import margins, select
from tutorloop.trainer.inference import predict_logits_and_embeddings
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student

console = Console()


def _view(student: Any, temperature: float, texts: list[str]) -> tuple[Any, Any]:
    ids = student.tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    logits, pooled = predict_logits_and_embeddings(student.model, student.tokenizer, ids)
    return torch.softmax(logits / temperature, dim=1).numpy(), pooled.numpy()


def _captured(probs: Any, rng: random.Random) -> list[int]:
    """The default capture policy (confidence < 0.6 or margin < 0.1) plus a 1% audit slice."""
    low = (probs.max(axis=1) < 0.6) | (margins(probs) < 0.1)
    return [i for i in range(len(probs)) if low[i] or rng.random() < 0.01]


def _choose(policy: str, budget: int, view: dict[str, Any], rng: random.Random) -> list[int]:
    if policy == "random":
        return sorted(rng.sample(range(len(view["probs"])), budget))
    return select(policy, budget, view["probs"], embeddings=view["emb"],  # type: ignore[arg-type]
                  covered=view["covered"])  # fmt: skip


def _point(
    name: str, budget: int, picked: list[int], view: dict[str, Any], ctx: dict[str, Any]
) -> dict[str, Any]:
    rows = ctx["public"] + [
        _row(view["texts"][i], view["labels"][i], ctx["labels"], "train", private=False)
        for i in picked
    ]
    cfg = ctx["cfg"]
    student = load_student(ctx["base"], ctx["labels"], cfg, init_adapter=ctx["seed"] / "adapter")
    started = time.perf_counter()
    outcome = train_student(student, _dataset(rows, ctx["labels"]), cfg)
    wall = time.perf_counter() - started
    result = {"policy": name, "budget": budget, "labeled": len(picked), "wall_s": round(wall, 1),
              **_score(student, outcome.temperature, ctx["test"], ctx["labels"])}  # fmt: skip
    console.print(result)
    return result


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--budgets", default="200,400,800")
    parser.add_argument("--policies", default="oldest,random,margin,margin_diverse")
    parser.add_argument("--no-full", action="store_true", help="skip the every-captured point")
    args = parser.parse_args()
    args.private = args.pool  # dp.py's split: the seed rows, then --private (here: pool) rows
    labels, rows, test, _, cfg, base = bench_setup(args)
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-acq-"))
    try:
        seed_dir, seed_score = _seed(args, rows, labels, test, cfg, base, tmp)
        public = [r for r in rows if not r["private"]]
        pool = [r for r in rows if r["private"]]
        rng = random.Random(1)
        rng.shuffle(pool)  # arrival order
        temperature = json.loads((seed_dir / "calibration.json").read_text())["temperature"]
        seed = load_student(base, labels, cfg, init_adapter=seed_dir / "adapter")
        probs, emb = _view(seed, temperature, [r["text"] for r in pool])
        _, covered = _view(seed, temperature, [r["text"] for r in public])
        keep = _captured(probs, rng)
        view = {"probs": probs[keep], "emb": emb[keep], "covered": covered,
                "texts": [pool[i]["text"] for i in keep],
                "labels": [labels[pool[i]["label"]] for i in keep]}  # fmt: skip
        console.print(f"seed {seed_score}; captured {len(keep)} of {len(pool)} traffic rows")
        ctx = {"cfg": cfg, "base": base, "labels": labels, "seed": seed_dir, "test": test,
               "public": public}  # fmt: skip
        results = []
        for budget in (int(b) for b in args.budgets.split(",")):
            for policy in args.policies.split(","):
                picked = _choose(policy, budget, view, random.Random(budget))
                results.append(_point(policy, budget, picked, view, ctx))
        if not args.no_full:
            everything = list(range(len(keep)))
            results.append(_point("all captured", len(keep), everything, view, ctx))
        _report(results, seed_score, len(keep), args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(
    results: list[dict[str, Any]], seed: dict[str, Any], captured: int, args: argparse.Namespace
) -> None:
    oldest = {r["budget"]: r["accuracy"] for r in results if r["policy"] == "oldest"}
    table = Table("policy", "labels", "accuracy", "vs seed (pts)", "vs oldest (pts)",
                  "macro-F1", "ECE", "wall s")  # fmt: skip
    for r in results:
        base = oldest.get(r["budget"])
        table.add_row(
            r["policy"], str(r["labeled"]), f"{r['accuracy']:.3f}",
            f"{100 * (r['accuracy'] - seed['accuracy']):+.1f}",
            f"{100 * (r['accuracy'] - base):+.1f}" if base is not None else "-",
            f"{r['macro_f1']:.3f}", f"{r['ece']:.3f}", f"{r['wall_s']:.0f}",
        )  # fmt: skip
    console.print(f"seed student: accuracy {seed['accuracy']:.3f}; captured {captured}")
    console.print(table)
    (args.out / "acquisition.json").write_text(
        json.dumps({"seed": seed, "captured": captured, "results": results}, indent=2)
    )
    _plot(results, seed, args.out)
    console.print(f"wrote {args.out / 'acquisition.json'} and acquisition_curve.png")


def _plot(results: list[dict[str, Any]], seed: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r["policy"] for r in results if r["policy"] != "all captured"):
        points = sorted((r["labeled"], r["accuracy"]) for r in results if r["policy"] == policy)
        ax.plot(*np.array(points).T, "o-", label=policy)
    for r in results:
        if r["policy"] == "all captured":
            ax.axhline(r["accuracy"], color="gray", ls="--",
                       label=f"every captured case ({r['labeled']})")  # fmt: skip
    ax.axhline(seed["accuracy"], color="black", ls=":", label="seed student")
    ax.set_xlabel("labels bought this week (on top of the seed set)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Banking77: labels to accuracy by acquisition policy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "acquisition_curve.png", dpi=120)


if __name__ == "__main__":
    main()
