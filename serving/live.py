"""Every ``serving.window_s``: the rollout comparison and drift windows go to the warehouse and
``/metrics``, and the running rollout is judged against the contract (any replica may end it:
the registry's ``judge`` reads all replicas' windows).

A window that cannot be written (the warehouse busy or away) is kept and written with the next
one; at most ``_MAX_PENDING`` wait, the oldest dropped first (logged). Serving never waits on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import deque
from typing import Any

from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.serving.drift import DriftMonitor
from tutorloop.serving.metrics import ServingMetrics
from tutorloop.serving.predictor import Predictor

log = logging.getLogger(__name__)
_MAX_PENDING = 1000
REPLICA = f"{socket.gethostname()}-{os.getpid()}"

_INSERT = {
    "rollout_windows": (
        "rollout_id", "replica", "window_start", "window_end", "requests",
        "challenger_answered", "agreement", "champion_confidence", "challenger_confidence",
        "champion_abstention", "challenger_abstention", "champion_p95_ms", "challenger_p95_ms",
        "errors",
    ),
    "drift_windows": (
        "replica", "model_version", "window_start", "window_end", "requests", "mean_confidence",
        "abstention_rate", "confidence_psi", "confidence_psi_null", "confidence_ks",
        "confidence_ks_p", "label_psi", "label_psi_null", "breached",
    ),
}  # fmt: skip


class LiveWindows:
    """The background thread that closes windows (see the module)."""

    def __init__(
        self, settings: Settings, predictor: Predictor, drift: DriftMonitor,
        metrics: ServingMetrics,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.predictor = predictor
        self.drift = drift
        self.metrics = metrics
        # One instance: it checks the schema once, not at every window.
        self._warehouse = open_warehouse(settings)
        self._pending: deque[tuple[str, dict[str, Any]]] = deque(maxlen=_MAX_PENDING)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-windows", daemon=True)
        self._fallbacks_seen = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.tick()  # the last, partial window

    def _run(self) -> None:
        while not self._stop.wait(self.settings.serving.window_s):
            try:
                self.tick()
            except Exception:  # never let the thread die
                log.exception("closing the live window failed")

    def tick(self) -> None:
        """Close the current windows, write what is pending, judge the rollout."""
        rollout = self.predictor.rollout.current
        if rollout is not None:
            row = rollout.take_window()
            if row is not None:
                row.update(rollout_id=rollout.state.rollout_id, replica=REPLICA)
                self._pending.append(("rollout_windows", row))
                if row["agreement"] is not None:
                    self.metrics.window.labels("rollout_agreement").set(row["agreement"])
        drift = self.drift.take_window()
        if drift is not None:
            self._pending.append(("drift_windows", {**drift, "replica": REPLICA}))
            self._export(drift)
        if self._pending and self._write():
            self._judge()

    def _export(self, drift: dict[str, Any]) -> None:
        gauge = self.metrics.window
        gauge.labels("abstention_rate").set(drift["abstention_rate"])
        for name in ("confidence_psi", "label_psi", "confidence_ks"):
            if drift[name] is not None:
                gauge.labels(name).set(drift[name])
        self.metrics.drift_breach.set(int(drift["breached"]))
        fallback = self.predictor.fallback
        if fallback is not None:
            asked = sum(fallback.outcomes.values())
            seen = int(drift["requests"])
            gauge.labels("fallback_rate").set((asked - self._fallbacks_seen) / max(1, seen))
            self._fallbacks_seen = asked

    def _write(self) -> bool:
        try:
            with self._warehouse.transaction(timeout_s=5) as con:
                for table, row in self._pending:
                    columns = _INSERT[table]
                    con.execute(
                        f"INSERT INTO {table} (window_id, {', '.join(columns)}) VALUES "
                        f"(?, {', '.join('?' for _ in columns)})",
                        [uuid.uuid4().hex, *(row[c] for c in columns)],
                    )
        except Exception as exc:
            log.warning("live windows not written yet (%d waiting): %s", len(self._pending), exc)
            return False
        self._pending.clear()
        return True

    def _judge(self) -> None:
        from tutorloop.registry.rollout import judge

        if self.predictor.rollout.current is None:
            return
        change = judge(self._warehouse, self.settings, actor=REPLICA)
        if change is not None:
            log.warning("rollout ended: %s %s -> %s (%s)", change.action, change.from_version,
                        change.to_version, change.reason)  # fmt: skip
            self.predictor.reload()
