"""Drift of the live prediction stream against the champion's reference window.

The reference is the first ``serving.drift_reference_size`` predictions a replica served with
the current champion (a new champion starts a new reference). Each later window of
``serving.window_s`` is compared with it: the population stability index (PSI) of the
confidence (ten bins on the reference's deciles) and of the label distribution, and a
two-sample Kolmogorov-Smirnov test on the confidence (scipy). A window of at least
``serving.drift_min_window`` predictions whose confidence or label PSI exceeds
``serving.drift_psi_max`` is a breach (0.1-0.2 is the usual "watch", above 0.2 "act").
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

_EPS = 1e-4  # empty bins: PSI is infinite without a floor


def psi(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]) -> float:
    """Population stability index of two histograms (counts or shares)."""
    e = np.maximum(expected / max(expected.sum(), 1), _EPS)
    a = np.maximum(actual / max(actual.sum(), 1), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def confidence_psi(reference: list[float], window: list[float]) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0].astype(float)
    actual = np.histogram(window, edges)[0].astype(float)
    return psi(expected, actual)


def label_psi(reference: Counter[str], window: Counter[str]) -> float:
    labels = sorted(set(reference) | set(window))
    return psi(
        np.array([reference[k] for k in labels], dtype=float),
        np.array([window[k] for k in labels], dtype=float),
    )


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
        self.last: dict[str, Any] | None = None

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
            "confidence_psi": None, "confidence_ks": None, "confidence_ks_p": None,
            "label_psi": None, "breached": False,
        }  # fmt: skip
        if n >= self.min_window:
            from scipy.stats import ks_2samp

            ks = ks_2samp(reference.confidence, window.confidence)
            row["confidence_psi"] = confidence_psi(reference.confidence, window.confidence)
            row["confidence_ks"], row["confidence_ks_p"] = float(ks.statistic), float(ks.pvalue)
            row["label_psi"] = label_psi(reference.labels, window.labels)
            row["breached"] = max(row["confidence_psi"], row["label_psi"]) > self.psi_max
        self.last = row
        return row
