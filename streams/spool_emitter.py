"""The serving emitter that never depends on the broker: events go through a :class:`DiskSpool`
(see ``streams.spool``); a sender thread delivers them in order and retries while the broker is
away. Implements ``streams.emitter.Emitter``."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from tutorloop.infra.broker import expected_bootstrap_servers
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS
from tutorloop.streams.emitter import EmitterStats, as_sent, event_time_ms
from tutorloop.streams.events import EscalationEvent, PredictionEvent
from tutorloop.streams.policy import CapturePolicy
from tutorloop.streams.spool import DiskSpool

log = logging.getLogger(__name__)

_BATCH = 500
_BOOTSTRAP_MS = 3000  # kafka-python waits 30 s by default before saying the broker is away
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class SpoolingEmitter:
    """Thread-safe; ``emit`` appends to the spool and returns (see the module)."""

    def __init__(
        self,
        bootstrap: str,
        spool: DiskSpool,
        *,
        predictions_topic: str = PREDICTIONS,
        escalations_topic: str = ESCALATIONS,
        text_policy: CapturePolicy | None = None,
        linger_s: float = 0.02,
        delivery_timeout_s: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.spool = spool
        self.predictions_topic = predictions_topic
        self.escalations_topic = escalations_topic
        self.stats = EmitterStats()
        self._policy = text_policy
        self._linger_s = linger_s
        self._timeout_s = delivery_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._producer: Any = None
        self.unreachable_since: datetime | None = None
        self._reached = False
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> SpoolingEmitter:
        cfg = settings.streams
        policy = (CapturePolicy.from_settings(settings.capture)
                  if cfg.emit_text == "capturable" else None)  # fmt: skip
        return cls(
            expected_bootstrap_servers(settings),
            DiskSpool(settings.spool_dir, cfg.emit_spool_bytes),
            predictions_topic=settings.topic(PREDICTIONS),
            escalations_topic=settings.topic(ESCALATIONS),
            text_policy=policy,
            linger_s=cfg.emit_linger_ms / 1000,
        )

    @property
    def queued(self) -> int:
        """Events spooled and not yet acknowledged by the broker."""
        return self.spool.records

    def describe(self) -> str:
        if self.unreachable_since is not None:
            return (f"broker unreachable since {self.unreachable_since.isoformat()}: "
                    f"{self.queued} events spooled")  # fmt: skip
        if not self._reached:
            return f"connecting to the broker: {self.queued} events spooled"
        return f"broker reachable: {self.queued} events queued"

    def emit(self, event: PredictionEvent) -> bool:
        """Spool a prediction event; False when it was dropped (spool full or closed)."""
        event = as_sent(self._policy, event)
        ok = self._append(self.predictions_topic, event)
        if ok and event.text is not None:
            with self._lock:
                self.stats.with_text += 1
        return ok

    def escalate(self, event: EscalationEvent) -> bool:
        return self._append(self.escalations_topic, event)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.queued:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is spooled (up to ``timeout_s``; the rest waits on disk), then stop."""
        if self._closing.is_set():
            return
        if self.unreachable_since is None:  # no point waiting on a broker known to be away
            self.flush(timeout_s)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._producer is not None:
            self._producer.close(timeout=1)
        self.spool.close()
        if self.queued:
            log.warning("%d events stay spooled in %s for the next start",
                        self.queued, self.spool.folder)  # fmt: skip

    def __enter__(self) -> SpoolingEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _append(self, topic: str, event: PredictionEvent | EscalationEvent) -> bool:
        ok = not self._closing.is_set() and self.spool.append(
            [(topic, event.key, event.to_bytes())]
        )
        with self._lock:
            if ok:
                self.stats.sent += 1
            else:
                self.stats.dropped += 1
        if not ok:
            log.warning("event %s dropped: %s", event.event_id,
                        "emitter closed" if self._closing.is_set() else "spool full")  # fmt: skip
        self._wake.set()
        return ok

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            records, end = self.spool.peek(_BATCH)
            if not records:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if len(records) < _BATCH:
                time.sleep(self._linger_s)  # let a burst gather into one batch
            if self._deliver(records):
                self.spool.commit(end, len(records))
                with self._lock:
                    self.stats.delivered += len(records)
                failures = 0
                self.unreachable_since = None
                self._reached = True
            else:
                self.unreachable_since = self.unreachable_since or datetime.now(UTC)
                self._closing.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1

    def _deliver(self, records: list[tuple[str, bytes | None, bytes]]) -> bool:
        from kafka import KafkaProducer

        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                    max_block_ms=int(self._timeout_s * 1000), retries=3,
                    bootstrap_timeout_ms=_BOOTSTRAP_MS,
                    request_timeout_ms=int(self._timeout_s * 1000) - 10,  # + linger <= delivery
                    delivery_timeout_ms=int(self._timeout_s * 1000),
                )  # fmt: skip
            futures = [
                self._producer.send(t, key=k, value=v, timestamp_ms=event_time_ms(v))
                for t, k, v in records
            ]
            self._producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=0)
        except Exception as exc:
            with self._lock:
                self.stats.failed += 1
            log.warning("cannot deliver to the broker at %s, %d events spooled: %s: %s",
                        self.bootstrap, self.queued, type(exc).__name__, exc)  # fmt: skip
            self._drop_producer()
            return False
        return True

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # a broken producer may fail to close: it is gone either way
                log.debug("closing the producer failed", exc_info=True)
