"""Serving's side of a shadow or canary rollout: score the challenger, pick who answers, and
keep the live comparison of the current window.

The rollout pointer (``registry.rollout``) is polled with the champion pointer. A shadow is
scored on every request and never answers; a canary answers the users whose id hashes into its
share (sticky: a user sees one model for the whole rollout) and is scored on the others too,
so agreement is measured on all traffic. A challenger that fails to score counts as an error
and the champion answers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tutorloop.infra.settings import Settings
from tutorloop.registry.onnx_model import OnnxStudent
from tutorloop.registry.rollout import RolloutState
from tutorloop.serving.pointers import Pointers
from tutorloop.serving.prediction import Prediction, load_model

log = logging.getLogger(__name__)


def in_canary(user_id: str, percent: float) -> bool:
    """Whether ``user_id`` falls in a canary's share (stable across replicas and restarts)."""
    bucket = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:4], "big") % 10_000
    return bucket < percent * 100


@dataclass
class LiveWindow:
    """What one replica saw of a rollout since the window started."""

    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    requests: int = 0
    challenger_answered: int = 0
    agreed: int = 0
    errors: int = 0
    confidence: list[float] = field(default_factory=lambda: [0.0, 0.0])
    abstained: list[int] = field(default_factory=lambda: [0, 0])
    latency_ms: list[list[float]] = field(default_factory=lambda: [[], []])

    def row(self) -> dict[str, Any]:
        n = max(1, self.requests)

        def p95(values: list[float]) -> float | None:
            return float(np.percentile(values, 95)) if values else None

        return {
            "window_start": self.started, "window_end": datetime.now(UTC),
            "requests": self.requests, "challenger_answered": self.challenger_answered,
            "agreement": self.agreed / n if self.requests else None,
            "champion_confidence": self.confidence[0] / n,
            "challenger_confidence": self.confidence[1] / n,
            "champion_abstention": self.abstained[0] / n,
            "challenger_abstention": self.abstained[1] / n,
            "champion_p95_ms": p95(self.latency_ms[0]),
            "challenger_p95_ms": p95(self.latency_ms[1]), "errors": self.errors,
        }  # fmt: skip


class Rollout:
    """A running rollout with its loaded challenger model."""

    def __init__(self, state: RolloutState, model: OnnxStudent) -> None:
        self.state = state
        self.model = model
        self.version = state.version
        self.labels = list(model.labels)
        self._lock = threading.Lock()
        self.window = LiveWindow()

    def score(self, texts: Sequence[str], *, scope: bool = False) -> tuple[Any, Any] | None:
        """The challenger's probabilities for ``texts`` and which it calls out of scope (with
        ``scope``); None when it failed: the champion answers every request of the batch and
        the failure is counted."""
        started = time.perf_counter()
        try:
            scored = self.model.predict_with_scope(
                list(texts), batch=max(1, len(texts)), scope=scope
            )
        except Exception:
            log.exception("challenger %s failed to score a batch", self.version)
            with self._lock:
                self.window.errors += len(texts)
            return None
        ms = (time.perf_counter() - started) * 1000
        with self._lock:  # recorded here: scorer threads score batches concurrently
            self.window.latency_ms[1].extend([ms] * len(texts))
        return scored

    def choose(self, user_id: str, mine: Prediction, theirs: Prediction) -> Prediction:
        """Who answers this request; the comparison is recorded either way."""
        canary = self.state.mode == "canary" and in_canary(user_id, self.state.percent)
        with self._lock:
            w = self.window
            w.requests += 1
            w.challenger_answered += int(canary)
            w.agreed += int(mine.top_k[0][0] == theirs.top_k[0][0])
            for arm, p in enumerate((mine, theirs)):
                w.confidence[arm] += p.confidence
                w.abstained[arm] += int(p.abstained)
        return theirs if canary else mine

    def champion_latency(self, ms: float, n: int) -> None:
        with self._lock:
            self.window.latency_ms[0].extend([ms] * n)

    def take_window(self) -> dict[str, Any] | None:
        """The finished window's row (None when it saw no request); a new window starts."""
        with self._lock:
            window, self.window = self.window, LiveWindow()
        return window.row() if window.requests or window.errors else None


class RolloutRouter:
    """Follows the rollout pointer; loads and drops the challenger."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: Rollout | None = None
        self._key: str | None = None  # of the loaded challenger: a new card reloads it
        self._failed: str | None = None

    def refresh(self, pointers: Pointers, threads: int) -> None:
        found = pointers.rollout()
        if found is None:
            if self.current is not None:
                log.info("rollout of %s ended", self.current.version)
            self.current = None
            return
        state, published = found
        if self.current is not None and published.key == self._key:
            return
        if published.key == self._failed:
            return
        retrieval = self.settings.serving.retrieval
        model = load_model(published.folder, state.version, threads, retrieval=retrieval)
        if model is None:
            self._failed = published.key
            return
        self.current, self._key = Rollout(state, model), published.key
        log.info("%s of %s started (%.1f%%)", state.mode, state.version, state.percent)

    def close(self) -> None:
        self.current = None
