"""One gate's result, and the rules that turn a measurement into a verdict.

A verdict is ``pass``, ``fail`` or ``insufficient`` (too few rows to decide). Whether a gate
blocks promotion follows from its verdict and its kind: a **hard** gate (serving constraints,
int8 agreement, the label set, an unavailable champion) blocks unless it passes; a **soft**
gate (quality floors, champion comparisons, int8 accuracy) blocks on ``fail``, and on
``insufficient`` only when the contract's ``evaluation.on_insufficient`` is ``block``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tutorloop.evaluation.intervals import Interval, PairedComparison, noninferiority_verdict
from tutorloop.infra.tables import GateVerdict as Verdict


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None
    threshold: float | None
    comparator: str  # ">=", "<=", "==", "info"
    passed: bool  # does not block promotion
    detail: str = ""
    n: int | None = None
    lower: float | None = None
    upper: float | None = None
    clause: str = ""  # the contract clause it is derived from, e.g. "quality.min_accuracy"
    verdict: str = Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _blocks(verdict: Verdict, hard: bool, on_insufficient: str) -> bool:
    if verdict == Verdict.PASS:
        return False
    return hard or verdict == Verdict.FAIL or on_insufficient == "block"


def constraint(
    name: str, value: float, threshold: float, comparator: str, clause: str, detail: str = ""
) -> GateResult:
    """A hard constraint on a measured quantity (latency, memory, size): pass or fail."""
    ok = value >= threshold if comparator == ">=" else value <= threshold
    verdict = Verdict.PASS if ok else Verdict.FAIL
    return GateResult(
        name, _round(value), threshold, comparator, bool(ok), detail, clause=clause,
        verdict=verdict,
    )  # fmt: skip


def floor(
    name: str,
    estimate: Interval,
    threshold: float,
    comparator: str,
    clause: str,
    *,
    min_n: int,
    on_insufficient: str,
    hard: bool = False,
    detail: str = "",
) -> GateResult:
    """A floor (or ceiling) on an estimate with its interval; below ``min_n`` rows it cannot
    decide. The verdict follows the point estimate; the interval says how sure it is."""
    if estimate.n < min_n:
        verdict = Verdict.INSUFFICIENT
        detail = f"{detail}; " if detail else ""
        detail += f"n={estimate.n} < {min_n} (evaluation.min_*)"
    else:
        ok = estimate.value >= threshold if comparator == ">=" else estimate.value <= threshold
        verdict = Verdict.PASS if ok else Verdict.FAIL
    value = None if estimate.n == 0 else _round(estimate.value)
    return GateResult(
        name, value, threshold, comparator, not _blocks(verdict, hard, on_insufficient), detail,
        n=estimate.n, lower=_round(estimate.lower), upper=_round(estimate.upper),
        clause=clause, verdict=verdict,
    )  # fmt: skip


def non_inferior(
    name: str,
    comparison: PairedComparison,
    margin: float,
    clause: str,
    *,
    min_n: int,
    on_insufficient: str,
    detail: str,
) -> GateResult:
    """Candidate minus reference on the same rows must be >= -``margin`` (one-sided bounds)."""
    verdict = Verdict(noninferiority_verdict(comparison, margin))
    if comparison.n < min_n and verdict != Verdict.FAIL:
        verdict = Verdict.INSUFFICIENT
    c = comparison
    detail = (
        f"{detail}, n={c.n}: {c.reference:.4f} -> {c.candidate:.4f}; lost {c.lost}, won {c.won}"
    )
    return GateResult(
        name, _round(c.delta), -margin, ">=", not _blocks(verdict, False, on_insufficient),
        detail, n=c.n, lower=_round(c.lower), upper=_round(c.upper), clause=clause,
        verdict=verdict,
    )  # fmt: skip


def blocked(name: str, clause: str, detail: str, *, n: int | None = None) -> GateResult:
    """A hard failure with nothing to measure (champion unavailable, no evaluation rows)."""
    return GateResult(name, None, None, "info", False, detail, n=n, clause=clause,
                      verdict=Verdict.FAIL)  # fmt: skip
