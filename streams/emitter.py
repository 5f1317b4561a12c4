"""The serving-side emitter: prediction and escalation events onto Kafka, off the request path.

The request path calls :meth:`PredictionEmitter.emit`, which never raises and never waits
longer than ``max_block_ms`` (the producer's wait for topic metadata): events are batched and
sent after ``linger_ms``. kafka-python's own buffer is unbounded, so the emitter bounds it: once
``buffer_bytes`` of events await delivery, new events are dropped at once rather than queued.
When delivery fails, or an event is dropped, it is counted, logged (its id, never its text)
and handed to the ``on_error`` callback.

Raw text leaves the serving process only where capture needs it: the emitter strips the text
from every prediction event whose user did not consent and, with a ``text_policy``, from every
one that policy would not capture (the worker audits those from metadata alone).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tutorloop.infra.broker import bootstrap_servers
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS
from tutorloop.streams.events import EscalationEvent, PredictionEvent
from tutorloop.streams.policy import CapturePolicy

log = logging.getLogger(__name__)

Event = PredictionEvent | EscalationEvent
ErrorCallback = Callable[[Event, BaseException], None]


def as_sent(policy: CapturePolicy | None, event: PredictionEvent) -> PredictionEvent:
    """``event`` as it leaves serving: with its text only when its user consented and, with a
    capture policy (``streams.emit_text = "capturable"``), only when that policy would keep it.
    Consent is checked in every mode: without it the text never leaves serving."""
    if event.text is None:
        return event
    if not event.consent.training:
        return event.without_text()
    if policy is None or policy.reason(event) is not None:
        return event
    return event.without_text()


class EmitterError(TutorloopError):
    """The emitter could not be set up (raised at start-up, never from ``emit``)."""


@dataclass
class EmitterStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    with_text: int = 0  # prediction events sent carrying their text


class Emitter(Protocol):
    """What serving needs of an emitter: hand over an event, never block on the broker."""

    def emit(self, event: PredictionEvent) -> bool:
        """Queue ``event`` for sending; False when it was dropped (the reason is logged)."""
        ...


class PredictionEmitter:
    """Emit events to Kafka from serving code. Thread-safe; use as a context manager.

    Implements :class:`Emitter`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        predictions_topic: str = PREDICTIONS,
        escalations_topic: str = ESCALATIONS,
        linger_ms: int = 20,
        max_block_ms: int = 50,
        buffer_bytes: int = 32 * 1024 * 1024,
        delivery_timeout_ms: int = 30_000,
        on_error: ErrorCallback | None = None,
        text_policy: CapturePolicy | None = None,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.predictions_topic = predictions_topic
        self.escalations_topic = escalations_topic
        self.stats = EmitterStats()
        self._on_error = on_error
        self._text_policy = text_policy
        self._lock = threading.Lock()
        self._closed = False
        self._buffer_bytes = buffer_bytes
        self._pending_bytes = 0
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                linger_ms=linger_ms,
                max_block_ms=max_block_ms,
                request_timeout_ms=max(1, min(30_000, delivery_timeout_ms - linger_ms - 1)),
                delivery_timeout_ms=delivery_timeout_ms,
                retries=5,
            )
        except KafkaError as exc:
            raise EmitterError(f"cannot start the emitter for Kafka at {bootstrap}: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> PredictionEmitter:
        cfg = settings.streams
        if cfg.emit_text == "capturable":
            kwargs.setdefault("text_policy", CapturePolicy.from_settings(settings.capture))
        return cls(
            bootstrap_servers(settings),
            predictions_topic=settings.topic(PREDICTIONS),
            escalations_topic=settings.topic(ESCALATIONS),
            linger_ms=cfg.emit_linger_ms,
            max_block_ms=cfg.emit_max_block_ms,
            buffer_bytes=cfg.emit_buffer_bytes,
            **kwargs,
        )

    def emit(self, event: PredictionEvent) -> bool:
        """Queue a prediction event; False when it could not be queued (already reported)."""
        event = as_sent(self._text_policy, event)
        if not self._send(self.predictions_topic, event):
            return False
        if event.text is not None:
            with self._lock:
                self.stats.with_text += 1
        return True

    def escalate(self, event: EscalationEvent) -> bool:
        """Queue an escalation event; False when it could not be queued (already reported)."""
        return self._send(self.escalations_topic, event)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is buffered (up to ``timeout_s``), then close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:
            log.warning("emitter flush on close failed: %s", exc)
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> PredictionEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _send(self, topic: str, event: Event) -> bool:
        if self._closed:
            self._report(event, RuntimeError("emitter is closed"), dropped=True)
            return False
        try:
            future = self._producer.send(
                topic, key=event.key, value=event.to_bytes(), timestamp_ms=_ms(event.ts)
            )
        except Exception as exc:
            self._report(event, exc, dropped=True)
            return False
        with self._lock:
            self.stats.sent += 1
        future.add_callback(self._delivered)
        future.add_errback(lambda exc: self._report(event, exc, dropped=False))
        return True

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self.stats.delivered += 1

    def _report(self, event: Event, exc: BaseException, *, dropped: bool) -> None:
        with self._lock:
            if dropped:
                self.stats.dropped += 1
            else:
                self.stats.failed += 1
        log.warning(
            "event %s not delivered (%s): %s",
            event.event_id,
            "dropped" if dropped else "delivery failed",
            type(exc).__name__,
        )
        if self._on_error is not None:
            try:
                self._on_error(event, exc)
            except Exception:
                log.exception("emitter on_error callback raised")


def _ms(ts: datetime) -> int:
    # Never later than now: a record stamped in the future would outlive the topics' retention.
    return min(int(ts.timestamp() * 1000), int(time.time() * 1000))


def event_time_ms(value: bytes) -> int | None:
    """The event's own time (``ts``) as the Kafka record's timestamp, so that the topics'
    retention counts from when the event happened, not from when a spool that waited out a
    broker outage sent it; None (the broker's send time) when the value has none readable."""
    try:
        ts = json.loads(value).get("ts")
        return _ms(datetime.fromisoformat(ts)) if isinstance(ts, str) else None
    except (ValueError, AttributeError):
        return None
