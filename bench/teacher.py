"""Benchmark: a stronger local teacher — the pool's nearest rows voting with the head.

Usage:
    python bench/teacher.py [--draws 5,6,7] [--embeddings-cache FILE]

The teacher's pool is 39 train rows per intent (the demo's size), drawn ``--draws`` times from
the train rows that ``bench/dp.py``'s split leaves free (seed and traffic rows excluded). Per
draw, each candidate is scored on the free rows outside that pool (*dev*, 3,287) and on every
2nd test row (1,540):

- ``head``: all-mpnet-base-v2 + a logistic head (C = 50), today's reference teacher;
- ``head + kNN``: ``teacher.knn_weight = 0.5`` — the same head mixed half and half with the
  vote of the pool's 10 nearest rows (:class:`RetrievalMemory`, tau 0.05), as the teacher
  computes it;
- ``MiniLM head``, ``two heads`` and ``two heads + two kNN votes`` (all-MiniLM-L6-v2 beside
  mpnet, averaged): how much a second encoder would add (not built).

Embeddings are computed once per encoder (``--embeddings-cache`` keeps them).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from dp import bench_parser, bench_setup  # the same split
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from tutorloop.evaluation.retrieval import RetrievalMemory, interpolate
from tutorloop.labeling.embeddings import Encoder
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.models import resolve_model

console = Console()
_ENCODERS = {"mpnet": "all-mpnet-base-v2", "minilm": "all-minilm-l6-v2"}


def _embeddings(texts: list[str], cache: Path | None, models_dir: Path) -> dict[str, Any]:
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            return {key: data[key] for key in _ENCODERS}
    out = {key: Encoder(resolve_model(name, models_dir)).encode(texts)
           for key, name in _ENCODERS.items()}  # fmt: skip
    if cache is not None:
        np.savez(cache, mpnet=out["mpnet"], minilm=out["minilm"])
    return out


def _candidates(emb: dict[str, Any], pool: Any, y_pool: Any, rows: Any) -> dict[str, Any]:
    probs, votes = {}, {}
    for key, e in emb.items():
        head = LogisticRegression(C=50.0, max_iter=3000).fit(e[pool], y_pool)
        probs[key] = head.predict_proba(e[rows])
        memory = RetrievalMemory.build(e[pool], y_pool, probs[key].shape[1])
        votes[key] = memory.label_distribution(e[rows], k=10, tau=0.05)
    return {
        "head (today)": probs["mpnet"],
        "head + kNN (knn_weight 0.5)": interpolate(probs["mpnet"], votes["mpnet"], 0.5),
        "MiniLM head": probs["minilm"],
        "two heads": (probs["mpnet"] + probs["minilm"]) / 2,
        "two heads + two kNN votes": (sum(probs.values()) + sum(votes.values())) / 4,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--draws", default="5,6,7", help="seeds of the pool draws")
    parser.add_argument("--embeddings-cache", type=Path, default=None)
    args = parser.parse_args()
    args.private = 3000  # dp.py's split with bench/representation.py's traffic
    labels, rows, test, settings, _, _ = bench_setup(args)
    used = {r["text"] for r in rows}
    train = read_labeled_csv(args.train)
    free = [(t, y) for t, y in zip(train.texts, train.labels, strict=True) if t not in used]
    emb = _embeddings([t for t, _ in free] + list(test[0]), args.embeddings_cache,
                      settings.models_dir)  # fmt: skip
    y = np.array([labels.index(label) for _, label in free] + [labels.index(x) for x in test[1]])
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(free):
        by_label[label].append(i)
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for draw in (int(d) for d in args.draws.split(",")):
        rng = random.Random(draw)
        pool = np.array(
            [
                i
                for label in labels
                for i in rng.sample(by_label[label], min(39, len(by_label[label])))
            ]
        )
        dev = np.array(sorted(set(range(len(free))) - set(pool.tolist())))
        scored = np.concatenate([dev, np.arange(len(free), len(y))])
        for name, probs in _candidates(emb, pool, y[pool], scored).items():
            right = probs.argmax(axis=1) == y[scored]
            results[name].append((float(right[: len(dev)].mean()), float(right[len(dev) :].mean())))
    table = Table("teacher", "dev accuracy per draw", "test accuracy per draw", "test median",
                  title=f"local teacher, 39 rows per intent, draws {args.draws}")  # fmt: skip
    for name, per_draw in results.items():
        table.add_row(name, " ".join(f"{d:.3f}" for d, _ in per_draw),
                      " ".join(f"{t:.3f}" for _, t in per_draw),
                      f"{statistics.median(t for _, t in per_draw):.3f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
