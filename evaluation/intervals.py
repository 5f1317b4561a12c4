"""Confidence intervals and the paired non-inferiority test the gates decide with.

Proportions (accuracy, recall, agreement) get Wilson score intervals (scipy); metrics
that are not a mean of independent 0/1 outcomes (macro-F1, ECE, AURC, selective accuracy) get
percentile bootstrap intervals over rows. Comparisons of two models on the same rows are
paired: the bootstrap resamples rows, so both models' outcomes move together and only the
rows where they differ carry information, as in McNemar's test.

Every resampling uses a fixed seed: the same predictions give the same interval, so a gate
verdict does not flicker from one run to the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

BOOTSTRAP_SAMPLES = 1000
_SEED = 20240917

BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; ``lower``/``upper`` are ``None`` when n is 0."""

    value: float
    lower: float | None
    upper: float | None
    n: int


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    """Two-sided Wilson score interval of a proportion (scipy's ``binomtest``)."""
    from scipy.stats import binomtest

    if n == 0:
        return Interval(float("nan"), None, None, 0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), n)


def bootstrap(
    metric: Callable[[NDArray[np.intp]], float],
    n: int,
    *,
    confidence: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Interval:
    """Percentile bootstrap interval of ``metric(rows)``, where ``rows`` indexes the data.

    ``metric`` receives an index array (the identity for the point estimate) so it can
    recompute anything row-wise: F1 over resampled rows, ECE over resampled rows.
    """
    if n == 0:
        return Interval(float("nan"), None, None, 0)
    value = metric(np.arange(n))
    rng = np.random.default_rng(_SEED)
    draws = np.array([metric(rng.integers(0, n, n)) for _ in range(samples)])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return Interval(float(value), float(lo), float(hi), n)


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus reference on the same rows, with one-sided bounds at ``confidence``.

    ``lower`` is the one-sided lower bound (for non-inferiority), ``upper`` the one-sided upper
    bound (for showing the candidate worse). ``lost``: rows the reference got right and the
    candidate wrong; ``won`` the reverse.
    """

    delta: float
    lower: float
    upper: float
    n: int
    lost: int
    won: int
    reference: float
    candidate: float


_NO_ROWS = PairedComparison(0.0, -1.0, 1.0, 0, 0, 0, float("nan"), float("nan"))


def paired_difference(
    reference: BoolArray,
    candidate: BoolArray,
    *,
    confidence: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
) -> PairedComparison:
    """Paired bootstrap of accuracy(candidate) - accuracy(reference) on the same rows.

    Only discordant rows move the difference, so it is resampled from their counts: a
    multinomial over (lost, won, tied) per bootstrap sample, exact and fast for any n.
    """
    ref = np.asarray(reference, dtype=bool)
    cand = np.asarray(candidate, dtype=bool)
    if ref.shape != cand.shape:
        raise ValueError("reference and candidate must score the same rows")
    n = int(ref.size)
    lost = int(np.sum(ref & ~cand))
    won = int(np.sum(cand & ~ref))
    if n == 0:
        return _NO_ROWS
    rng = np.random.default_rng(_SEED)
    counts = rng.multinomial(n, [lost / n, won / n, (n - lost - won) / n], size=samples)
    deltas = (counts[:, 1] - counts[:, 0]) / n
    lo, hi = np.quantile(deltas, [1 - confidence, confidence])
    return PairedComparison(
        delta=(won - lost) / n, lower=float(lo), upper=float(hi), n=n, lost=lost, won=won,
        reference=float(ref.mean()), candidate=float(cand.mean()),
    )  # fmt: skip


def noninferiority_verdict(comparison: PairedComparison, margin: float) -> str:
    """``pass``, ``fail`` or ``insufficient`` for "candidate is at most ``margin`` worse".

    - pass: the one-sided lower bound is above ``-margin`` (non-inferiority shown);
    - fail: the estimate is more than ``margin`` worse and the candidate is shown worse than
      the reference (upper bound below zero): losing 4 of 43 and winning none fails;
    - insufficient: the rows cannot tell (one lost case of 43 with a 2-point margin).
    """
    if comparison.n == 0:
        return "insufficient"
    if comparison.lower >= -margin:
        return "pass"
    if comparison.delta < -margin and comparison.upper < 0:
        return "fail"
    return "insufficient"


def rows_metric(
    fn: Callable[[Any, Any], float], probs: NDArray[Any], targets: NDArray[Any]
) -> Callable[[NDArray[np.intp]], float]:
    """Adapt ``fn(probs, targets)`` to :func:`bootstrap`'s row-index form."""
    return lambda rows: fn(probs[rows], targets[rows])


def paired_metric_difference(
    metric: Callable[[NDArray[Any], NDArray[Any]], float],
    reference_probs: NDArray[Any],
    candidate_probs: NDArray[Any],
    targets: NDArray[Any],
    *,
    confidence: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
) -> PairedComparison:
    """Paired bootstrap of ``metric`` (candidate minus reference) for metrics that are not a
    mean over rows (macro-F1): both models are rescored on the same resampled rows. One-sided
    bounds at ``confidence`` are the two-sided interval at ``2 confidence - 1``."""
    n = len(targets)
    if n == 0:
        return _NO_ROWS

    def difference(rows: NDArray[np.intp]) -> float:
        return metric(candidate_probs[rows], targets[rows]) - metric(
            reference_probs[rows], targets[rows]
        )

    interval = bootstrap(difference, n, confidence=2 * confidence - 1, samples=samples)
    assert interval.lower is not None and interval.upper is not None
    ref_ok = reference_probs.argmax(axis=1) == targets
    cand_ok = candidate_probs.argmax(axis=1) == targets
    return PairedComparison(
        delta=interval.value, lower=interval.lower, upper=interval.upper, n=n,
        lost=int(np.sum(ref_ok & ~cand_ok)), won=int(np.sum(cand_ok & ~ref_ok)),
        reference=metric(reference_probs, targets), candidate=metric(candidate_probs, targets),
    )  # fmt: skip
