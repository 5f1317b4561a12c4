"""The demo's production traffic: served over HTTP, emitted to Kafka, stored by the worker."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.progress import progress_bar
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.serving.server import serving
from tutorloop.streams.events import EscalationEvent, now_utc
from tutorloop.streams.spool_emitter import SpoolingEmitter
from tutorloop.streams.stats import audited_count


@dataclass(frozen=True)
class Traffic:
    served: int
    escalated: int
    with_text: int  # prediction events that carried their text to Kafka
    truth: dict[str, str]  # request id -> true label: what the demo's reviewers know


def serve_traffic(settings: Settings, rows: Any, escalate: float, rng: random.Random) -> Traffic:
    """Send ``rows`` through the HTTP server and the emitter; escalate a random fraction.

    An escalation carries the query: serving sent it only with the predictions it captures.
    """

    # No access log here: a JSON line per request would bury the progress bars.
    quiet = settings.serving.model_copy(update={"access_log": False})
    with (
        SpoolingEmitter.from_settings(settings) as emitter,
        serving(settings.model_copy(update={"serving": quiet}), emitter=emitter, port=0) as server,
    ):
        url = f"{server.url}/predict"
        escalated = 0
        truth: dict[str, str] = {}
        lock = threading.Lock()
        stop = threading.Event()
        work = list(enumerate(zip(rows.texts, rows.labels, strict=True)))

        def client(part: list[tuple[int, tuple[str, str]]]) -> None:
            nonlocal escalated
            with httpx.Client(timeout=30) as http:
                for i, (text, label) in part:
                    if stop.is_set():
                        return
                    body = {"text": text, "user_id": f"user-{i % 997}", "tenant_id": "demo",
                            "consent": {"training": True}}  # fmt: skip
                    reply = http.post(url, json=body)
                    reply.raise_for_status()
                    with lock:
                        truth[reply.json()["request_id"]] = label
                    if rng.random() < escalate:
                        emitter.escalate(
                            EscalationEvent(
                                event_id=uuid.uuid4(), ts=now_utc(),
                                request_id=reply.json()["request_id"],
                                tenant_id=body["tenant_id"], user_id=body["user_id"],
                                reason="customer_escalation", human_label=label,
                                actor="demo-agent", text=text,
                            )
                        )  # fmt: skip
                        with lock:
                            escalated += 1

        with progress_bar("serving traffic", len(work)) as advance:
            threads = [
                threading.Thread(target=client, args=(work[k::2],), daemon=True) for k in range(2)
            ]
            for t in threads:
                t.start()
            done = 0
            try:
                while any(t.is_alive() for t in threads):
                    time.sleep(0.5)
                    now = emitter.stats.sent
                    advance(now - done)
                    done = now
            finally:
                stop.set()  # on Ctrl-C the clients stop too
                for t in threads:
                    t.join(timeout=10)
            advance(max(0, emitter.stats.sent - done))
        emitter.flush(30)
    return Traffic(len(work), escalated, emitter.stats.with_text, truth)


def wait_for_warehouse(settings: Settings, expected: int, timeout: float = 600) -> int:

    warehouse = open_warehouse(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = audited_count(warehouse)
        if count >= expected:
            return count
        time.sleep(1)
    raise TutorloopError(f"the stream worker stored only {count} of {expected} predictions")
