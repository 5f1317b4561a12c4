"""Benchmark: representation distillation on and off, in one retrain from the seed student.

Usage:
    python bench/representation.py [--variants 0,cosine:1,contrastive:1] [--seeds 0,1,2]
                                   [--teacher-per-label 39] [--seed-cache DIR]

One run, the same data for every point (the split of ``bench/dp.py``, so one cached seed
student serves all three benches):
1. the seed student: 10 labeled examples per intent from the train file (``--seed-cache``);
2. the reference teacher: all-mpnet-base-v2 with a logistic head fitted on
   ``--teacher-per-label`` other train rows per intent (the demo's pool is ~39 per intent);
3. a week of traffic: ``--pool`` other train rows; the seed scores them and the default
   capture policy keeps those below 0.6 confidence or 0.1 margin, plus a 1% audit slice;
4. the teacher labels every captured case (its soft distribution, as relabel stores it);
5. per variant and trainer seed, the student retrains from the seed on seed rows + captured
   rows with the trainer defaults, with ``trainer.representation_weight`` and
   ``representation_loss`` as the variant says (``0``: off; ``cosine:1``; ``contrastive:1``);
6. each student is scored on the test file (every ``--test-every``-th row), and the share of
   the seed-to-teacher gap it closed is computed against the teacher's own test accuracy.

Prints the table (each variant's accuracy per seed, its median and its difference from ``0``
at the same seed), writes ``representation.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dp import _dataset, _score, _seed, bench_parser, bench_setup  # the same split
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from tutorloop.labeling.acquisition import margins
from tutorloop.labeling.embeddings import Encoder
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.models import resolve_model
from tutorloop.trainer.inference import predict_logits
from tutorloop.trainer.representation import RepresentationTargets
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student

console = Console()


class _CachedEncoder:
    """The teacher encoder, each text embedded once across variants."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Any) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._encoder.encode(missing), strict=True))
        return np.stack([self._cache[t] for t in texts])


def _teacher(args: argparse.Namespace, used: set[str], labels: list[str], embed: Any) -> Any:
    """A logistic head on the encoder, fitted on rows neither seed nor traffic uses."""
    train = read_labeled_csv(args.train)
    free: dict[str, list[str]] = defaultdict(list)
    for text, label in zip(train.texts, train.labels, strict=True):
        if text not in used:
            free[label].append(text)
    rng = random.Random(5)
    per_label = args.teacher_per_label
    pool = [(t, label) for label in labels
            for t in rng.sample(free[label], min(per_label, len(free[label])))]  # fmt: skip
    head = LogisticRegression(C=50.0, max_iter=2000)
    head.fit(embed([t for t, _ in pool]), [labels.index(label) for _, label in pool])
    return head


def _captured(seed: Any, temperature: float, pool: list[dict[str, Any]]) -> list[str]:
    """The default capture policy (confidence < 0.6 or margin < 0.1) plus a 1% audit slice."""
    texts = [r["text"] for r in pool]
    ids = seed.tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    logits = predict_logits(seed.model, seed.tokenizer, ids)
    probs = torch.softmax(logits / temperature, 1).numpy()
    low = (probs.max(axis=1) < 0.6) | (margins(probs) < 0.1)
    rng = random.Random(1)
    return [texts[i] for i in range(len(texts)) if low[i] or rng.random() < 0.01]


def _teacher_rows(texts: list[str], probs: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"case_id": f"c:{text}", "text": text, "label": int(p.argmax()),
         "soft_targets": p.astype(float).tolist(), "source": "teacher",
         "split": "validation" if n % 10 == 0 else "train", "replay": False, "private": True}
        for n, (text, p) in enumerate(zip(texts, probs, strict=True))
    ]  # fmt: skip


@dataclass
class Week:
    """The seed student, the reference teacher, and a week of captured traffic it labeled."""

    seed_dir: Path
    seed_score: dict[str, Any]
    embed: _CachedEncoder
    teacher_accuracy: float
    captured: list[str]
    labeled: list[dict[str, Any]]


def labeled_week(args: argparse.Namespace, setup: tuple[Any, ...], tmp: Path) -> Week:
    """Steps 1-4 of this bench (``setup`` is :func:`bench_setup`'s answer)."""
    labels, rows, test, settings, cfg, base = setup
    embed = _CachedEncoder(Encoder(resolve_model("all-mpnet-base-v2", settings.models_dir)))
    seed_dir, seed_score = _seed(args, rows, labels, test, cfg, base, tmp)
    head = _teacher(args, {r["text"] for r in rows}, labels, embed)
    truth = np.array([labels.index(label) for label in test[1]])
    teacher_acc = float((head.predict(embed(test[0])) == truth).mean())
    temperature = json.loads((seed_dir / "calibration.json").read_text())["temperature"]
    seed = load_student(base, labels, cfg, init_adapter=seed_dir / "adapter")
    captured = _captured(seed, temperature, [r for r in rows if r["private"]])
    labeled = _teacher_rows(captured, head.predict_proba(embed(captured)))
    return Week(seed_dir, seed_score, embed, teacher_acc, captured, labeled)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--teacher-per-label", type=int, default=39)
    parser.add_argument("--variants", default="0,cosine:1,contrastive:1")
    parser.add_argument("--seeds", default="0,1,2", help="trainer seeds (same data)")
    args = parser.parse_args()
    args.private = args.pool  # dp.py's split: the seed rows, then --private (here: pool) rows
    labels, rows, test, settings, cfg, base = bench_setup(args)
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-rep-"))
    try:
        week = labeled_week(args, (labels, rows, test, settings, cfg, base), tmp)
        seed_dir, seed_score, teacher_acc = week.seed_dir, week.seed_score, week.teacher_accuracy
        embed, captured, labeled = week.embed, week.captured, week.labeled
        data = _dataset([r for r in rows if not r["private"]] + labeled, labels)
        console.print(f"seed {seed_score['accuracy']:.3f}, teacher {teacher_acc:.3f}, "
                      f"{len(captured)} captured")  # fmt: skip
        results = []
        for trainer_seed in (int(s) for s in args.seeds.split(",")):
            for variant in args.variants.split(","):
                kind, _, weight = variant.rpartition(":")
                run_cfg = cfg.model_copy(update={"seed": trainer_seed})
                student = load_student(base, labels, run_cfg, init_adapter=seed_dir / "adapter")
                targets = (RepresentationTargets(embed, float(weight), "mpnet", kind or "cosine")
                           if float(weight) else None)  # fmt: skip
                started = time.perf_counter()
                outcome = train_student(student, data, run_cfg, representation=targets)
                score = _score(student, outcome.temperature, test, labels)
                gap = (score["accuracy"] - seed_score["accuracy"]) / (
                    teacher_acc - seed_score["accuracy"]
                )
                wall = round(time.perf_counter() - started)
                results.append({"variant": variant, "seed": trainer_seed, **score,
                                "gap": gap, "wall_s": wall})  # fmt: skip
                console.print(results[-1])
        _report(results, seed_score, teacher_acc, len(captured), args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(
    results: list[dict[str, Any]], seed: dict[str, Any], teacher: float, captured: int,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    off = {r["seed"]: r["accuracy"] for r in results if r["variant"] == "0"}
    table = Table("variant", "accuracy per seed", "median", "gap closed (median)",
                  "vs off, per seed (pts)", title=f"seed {seed['accuracy']:.3f}, teacher "
                  f"{teacher:.3f}, {captured} captured")  # fmt: skip
    for variant in dict.fromkeys(r["variant"] for r in results):
        mine = [r for r in results if r["variant"] == variant]
        table.add_row(
            variant, " ".join(f"{r['accuracy']:.3f}" for r in mine),
            f"{statistics.median(r['accuracy'] for r in mine):.3f}",
            f"{statistics.median(r['gap'] for r in mine):.1%}",
            " ".join(f"{100 * (r['accuracy'] - off[r['seed']]):+.1f}" for r in mine
                     if r["seed"] in off),
        )  # fmt: skip
    console.print(table)
    summary = {"seed": seed, "teacher_accuracy": teacher, "captured": captured, "runs": results}
    (args.out / "representation.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
