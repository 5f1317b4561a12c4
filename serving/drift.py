"""Drift of the live prediction stream against the champion's reference window.

The reference is the first ``serving.drift_reference_size`` predictions a replica served with
the current champion (a new champion starts a new reference). Each later window of
``serving.window_s`` is compared with it: the population stability index (PSI) of the
confidence (ten bins on the reference's deciles) and of the label distribution, and a
two-sample Kolmogorov-Smirnov test on the confidence (scipy). A window of at least
``serving.drift_min_window`` predictions is a breach when a PSI exceeds both
``serving.drift_psi_max`` (0.1-0.2 is the usual "watch", above 0.2 "act") and what chance
alone reaches 1% of the time for samples of these sizes: with 77 labels, a 1,000-prediction
reference and a 200-prediction window, two samples of one unchanged stream differ by a PSI of
~0.37 on average, so a fixed 0.2 would cry drift on every window.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

_NULL_DRAWS = 200


def psi(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Population stability index of count histograms (last axis), with add-half smoothing
    (an empty bin would make it infinite)."""
    k = expected.shape[-1]
    e = (expected + 0.5) / (expected.sum(axis=-1, keepdims=True) + 0.5 * k)
    a = (actual + 0.5) / (actual.sum(axis=-1, keepdims=True) + 0.5 * k)
    return np.asarray(np.sum((a - e) * np.log(a / e), axis=-1))


def null_psi_q99(reference: np.ndarray[Any, Any], n_window: int) -> float:
    """The PSI two samples of these sizes reach by chance 1% of the time when nothing drifted
    (parametric bootstrap from the reference's proportions). With many labels and small
    windows it is large: 77 labels, 1,000 reference and 200 window predictions: ~0.5."""
    rng = np.random.default_rng(0)
    p = (reference + 0.5) / (reference.sum() + 0.5 * len(reference))
    refs = rng.multinomial(int(reference.sum()), p, size=_NULL_DRAWS).astype(float)
    wins = rng.multinomial(n_window, p, size=_NULL_DRAWS).astype(float)
    return float(np.quantile(psi(refs, wins), 0.99))


def confidence_counts(
    reference: list[float], window: list[float]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Histograms of both on the reference's deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)))
    edges[0], edges[-1] = -np.inf, np.inf
    return (np.histogram(reference, edges)[0].astype(float),
            np.histogram(window, edges)[0].astype(float))  # fmt: skip


def label_counts(
    reference: Counter[str], window: Counter[str]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    labels = sorted(set(reference) | set(window))
    return (np.array([reference[k] for k in labels], dtype=float),
            np.array([window[k] for k in labels], dtype=float))  # fmt: skip


@dataclass
class _Sample:
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    confidence: list[float] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    abstained: int = 0

    def add(self, label: str, confidence: float, abstained: bool) -> None:
        self.confidence.append(confidence)
        self.labels[label] += 1
        self.abstained += int(abstained)


class DriftMonitor:
    """Per-replica drift windows of one champion version."""

    def __init__(self, *, reference_size: int, min_window: int, psi_max: float) -> None:
        self.reference_size = reference_size
        self.min_window = min_window
        self.psi_max = psi_max
        self._lock = threading.Lock()
        self._version: str | None = None
        self._reference = _Sample()
        self._window = _Sample()

    @property
    def reference_ready(self) -> bool:
        return len(self._reference.confidence) >= self.reference_size

    def record(self, version: str, label: str, confidence: float, abstained: bool) -> None:
        with self._lock:
            if version != self._version:  # a new champion: a new reference
                self._version, self._reference, self._window = version, _Sample(), _Sample()
            target = self._window if self.reference_ready else self._reference
            target.add(label, confidence, abstained)

    def take_window(self) -> dict[str, Any] | None:
        """The finished window compared with the reference (None before the reference is full
        or when the window saw nothing); a new window starts."""
        with self._lock:
            if not self.reference_ready or self._version is None:
                return None
            window, self._window = self._window, _Sample()
            reference, version = self._reference, self._version
        n = len(window.confidence)
        if n == 0:
            return None
        row: dict[str, Any] = {
            "model_version": version, "window_start": window.started,
            "window_end": datetime.now(UTC), "requests": n,
            "mean_confidence": float(np.mean(window.confidence)),
            "abstention_rate": window.abstained / n,
            "confidence_psi": None, "confidence_psi_null": None, "confidence_ks": None,
            "confidence_ks_p": None, "label_psi": None, "label_psi_null": None,
            "breached": False,
        }  # fmt: skip
        if n >= self.min_window:
            from scipy.stats import ks_2samp

            ks = ks_2samp(reference.confidence, window.confidence)
            row["confidence_ks"], row["confidence_ks_p"] = float(ks.statistic), float(ks.pvalue)
            breached = False
            for name, (ref, win) in (
                ("confidence", confidence_counts(reference.confidence, window.confidence)),
                ("label", label_counts(reference.labels, window.labels)),
            ):
                value, chance = float(psi(ref, win)), null_psi_q99(ref, n)
                row[f"{name}_psi"], row[f"{name}_psi_null"] = value, chance
                breached |= value > max(self.psi_max, chance)
            row["breached"] = breached
        return row
