"""Retrieval memory: the labelled rows a student was trained on, kept as its own sentence
embeddings and queried by cosine similarity.

The k most similar rows vote for their labels, each vote weighted by ``exp(similarity / tau)``;
the resulting distribution is interpolated with the student's (kNN-LM style, Khandelwal et al.
2020): ``(1 - w) * student + w * retrieved``, with ``w`` (0 included, i.e. "don't") chosen on
validation rows by log loss. Exact search in numpy: one matrix product per batch is all a
memory of tens of thousands of rows needs (bench/retrieval.py measures it), so no index
library is worth its dependency here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tutorloop.evaluation.metrics import FloatArray, IntArray


def unit_rows(x: FloatArray) -> FloatArray:
    """Each row scaled to unit length (float32): what cosine similarity compares."""
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


@dataclass(frozen=True)
class RetrievalMemory:
    keys: FloatArray  # (rows, dim), unit length
    targets: IntArray  # (rows,), the label index of each row
    n_labels: int

    @classmethod
    def build(cls, embeddings: FloatArray, targets: IntArray, n_labels: int) -> RetrievalMemory:
        if len(embeddings) != len(targets) or len(targets) == 0:
            raise ValueError("need one label per embedding, and at least one row")
        return cls(unit_rows(embeddings), np.asarray(targets, dtype=np.int64), n_labels)

    def label_distribution(self, embeddings: FloatArray, *, k: int, tau: float) -> FloatArray:
        """Per row, the labels of its ``k`` nearest memory rows as a distribution."""
        k = min(k, len(self.keys))
        similarity = unit_rows(embeddings) @ self.keys.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        sims = np.take_along_axis(similarity, nearest, axis=1)
        votes = np.exp((sims - sims.max(axis=1, keepdims=True)) / tau)
        out = np.zeros((len(similarity), self.n_labels), dtype=np.float64)
        np.add.at(out, (np.arange(len(out))[:, None], self.targets[nearest]), votes)
        return np.asarray(out / out.sum(axis=1, keepdims=True))

    def save(self, path: Path) -> None:
        np.savez(path, keys=self.keys.astype(np.float16), targets=self.targets,
                 n_labels=np.array(self.n_labels))  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> RetrievalMemory:
        with np.load(path) as data:
            return cls(data["keys"].astype(np.float32), data["targets"], int(data["n_labels"]))


def interpolate(student: FloatArray, retrieved: FloatArray, weight: float) -> FloatArray:
    return np.asarray((1 - weight) * student + weight * retrieved)


def choose_interpolation(
    student: FloatArray,
    memory: RetrievalMemory,
    embeddings: FloatArray,
    targets: IntArray,
    *,
    ks: tuple[int, ...] = (5, 10, 25),
    taus: tuple[float, ...] = (0.02, 0.05, 0.1),
    weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5),
) -> tuple[int, float, float]:
    """(k, tau, weight) with the lowest log loss on validation rows; weight 0 is "don't"."""
    best: tuple[float, int, float, float] | None = None
    rows = np.arange(len(targets))
    for k in ks:
        for tau in taus:
            retrieved = memory.label_distribution(embeddings, k=k, tau=tau)
            for weight in weights:
                mixed = interpolate(student, retrieved, weight)
                loss = float(-np.mean(np.log(np.maximum(mixed[rows, targets], 1e-12))))
                if best is None or loss < best[0] - 1e-9:
                    best = (loss, k, tau, weight)
    assert best is not None
    return best[1], best[2], best[3]
