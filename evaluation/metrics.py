"""Classification quality from predicted probabilities: the numbers gates and reports use.

Every function takes ``probs`` (n x k, rows summing to 1) and integer ``targets`` (n,).
ECE uses 15 equal-width confidence bins, the convention of Guo et al. (2017).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

ECE_BINS = 15

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.integer[Any]]


@dataclass(frozen=True)
class Reliability:
    """Per-bin mean confidence, accuracy and count: the reliability diagram's data."""

    bin_edges: list[float]
    confidence: list[float]
    accuracy: list[float]
    count: list[int]


@dataclass(frozen=True)
class Quality:
    """The headline metrics of one model on one labeled set."""

    n: int
    accuracy: float
    macro_f1: float
    ece: float
    aurc: float
    selective_accuracy: float
    coverage: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check(probs: FloatArray, targets: IntArray) -> None:
    if probs.ndim != 2 or targets.ndim != 1 or probs.shape[0] != targets.shape[0]:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} do not match")
    if probs.shape[0] == 0:
        raise ValueError("no examples to evaluate")


def accuracy(probs: FloatArray, targets: IntArray) -> float:
    _check(probs, targets)
    return float(np.mean(probs.argmax(axis=1) == targets))


def macro_f1(probs: FloatArray, targets: IntArray) -> float:
    """Macro-F1 over the labels that occur in ``targets``.

    Predictions of labels absent from the set still count against precision-free recall of
    the present ones, but do not add zero-F1 classes: a slice covering 20 of 77 labels is
    scored on those 20. Same figure as scikit-learn's ``f1_score(labels=present,
    average="macro")`` (tests/test_maths.py), in numpy: the bootstrap calls it thousands of times.
    """
    _check(probs, targets)
    predicted = probs.argmax(axis=1)
    k = max(int(probs.shape[1]), int(targets.max(initial=0)) + 1)
    tp = np.bincount(targets[predicted == targets], minlength=k)
    n_true = np.bincount(targets[targets >= 0], minlength=k)  # -1: a label the model lacks
    n_pred = np.bincount(predicted, minlength=k)
    present = n_true > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * tp[present] / (n_true[present] + n_pred[present])))


def reliability(probs: FloatArray, targets: IntArray, bins: int = ECE_BINS) -> Reliability:
    _check(probs, targets)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, (lo, hi], with 0 falling into the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    conf_out: list[float] = []
    acc_out: list[float] = []
    count_out: list[int] = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        count_out.append(n)
        conf_out.append(float(confidence[members].mean()) if n else 0.0)
        acc_out.append(float(correct[members].mean()) if n else 0.0)
    return Reliability([float(e) for e in edges], conf_out, acc_out, count_out)


def ece(probs: FloatArray, targets: IntArray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: count-weighted |accuracy - confidence| over bins."""
    table = reliability(probs, targets, bins)
    total = sum(table.count)
    return float(
        sum(
            n / total * abs(acc - conf)
            for n, acc, conf in zip(table.count, table.accuracy, table.confidence, strict=True)
        )
    )


def risk_coverage(probs: FloatArray, targets: IntArray) -> tuple[FloatArray, FloatArray]:
    """Coverage and selective risk when answering only the most confident first."""
    _check(probs, targets)
    order = np.argsort(-probs.max(axis=1), kind="stable")
    errors = (probs.argmax(axis=1) != targets)[order].astype(float)
    answered = np.arange(1, len(errors) + 1)
    return answered / len(errors), np.cumsum(errors) / answered


def aurc(probs: FloatArray, targets: IntArray) -> float:
    """Area under the risk-coverage curve (lower is better abstention)."""
    _, risk = risk_coverage(probs, targets)
    return float(risk.mean())


def selective_accuracy(probs: FloatArray, targets: IntArray, coverage: float) -> float:
    """Accuracy on the ``coverage`` share of examples the model is most confident about."""
    if not 0 < coverage <= 1:
        raise ValueError("coverage must be in (0, 1]")
    cov, risk = risk_coverage(probs, targets)
    at = int(np.searchsorted(cov, coverage - 1e-12))
    return float(1.0 - risk[min(at, len(risk) - 1)])


def quality(probs: FloatArray, targets: IntArray, *, coverage: float = 0.8) -> Quality:
    return Quality(
        n=int(targets.shape[0]),
        accuracy=accuracy(probs, targets),
        macro_f1=macro_f1(probs, targets),
        ece=ece(probs, targets),
        aurc=aurc(probs, targets),
        selective_accuracy=selective_accuracy(probs, targets, coverage),
        coverage=coverage,
    )


def single_query_latencies_ms(
    predict: Callable[[list[str]], object], texts: list[str], *, warmup: int = 20
) -> FloatArray:
    """Milliseconds per call of ``predict([text])`` for each text, after ``warmup`` untimed
    calls: one query at a time, as a serving request runs. The registry's latency gate and
    ``bench/serve.py`` both measure this way, so their figures compare."""
    for text in texts[:warmup]:
        predict([text])
    timings = []
    for text in texts:
        started = time.perf_counter()
        predict([text])
        timings.append((time.perf_counter() - started) * 1000)
    return np.array(timings)
