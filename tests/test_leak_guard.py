"""Leak guard: canary PII through the whole capture path must appear nowhere afterwards.

Real broker, real worker (with the full Presidio scrubber), real DuckDB file. Afterwards every
file under the data directory, the worker's log and every DLQ record are scanned.
"""

from __future__ import annotations

import json
from pathlib import Path

from kafka import KafkaProducer

from tests.conftest import WorkerProcess, read_topic, wait_until
from tests.streams_events import prediction
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import ESCALATIONS, PREDICTIONS, PREDICTIONS_DLQ, ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.streams.events import EscalationEvent, now_utc

CANARIES = {
    "name": "Jonathan Whitfield",
    "lower_name": "priya raman",
    "email": "jwhitfield@canary-mail.com",
    "card": "4111 1111 1111 1111",
    "phone": "+44 20 7946 0958",
    "address": "221 Baker Street",
}
TEXTS = [
    f"Hi, this is {CANARIES['name']}, my card {CANARIES['card']} was stolen",
    f"my name is {CANARIES['lower_name']}, email {CANARIES['email']}",
    f"please call {CANARIES['phone']} about the card sent to {CANARIES['address']}, Apt 4B",
]


def _dlq_values(settings: Settings) -> list[bytes]:
    return read_topic(settings.broker.bootstrap_servers, settings.topic(PREDICTIONS_DLQ), timeout=5)


def test_no_canary_survives_the_capture_path(
    settings: Settings, stream_env: dict[str, str], tmp_path: Path, warehouse: Warehouse
) -> None:
    ensure_topics(settings, settings.broker.bootstrap_servers)
    producer = KafkaProducer(bootstrap_servers=settings.broker.bootstrap_servers)
    captured = [prediction(confidence=0.2, text=t) for t in TEXTS]
    no_consent = prediction(confidence=0.2, consent=False, text=TEXTS[0])
    escalated = prediction(confidence=0.99, text=TEXTS[2])  # captured only via escalation
    for ev in [*captured, no_consent, escalated]:
        producer.send(settings.topic(PREDICTIONS), key=ev.key, value=ev.to_bytes())
    bad = json.dumps({"text": TEXTS[0], "note": CANARIES["email"]}).encode()
    producer.send(settings.topic(PREDICTIONS), value=bad)
    esc = EscalationEvent(
        event_id=escalated.event_id.__class__(int=escalated.event_id.int ^ 1),
        ts=now_utc(),
        request_id=escalated.request_id,
        reason=f"customer {CANARIES['name']} complained, reach {CANARIES['email']}",
        human_label="card_lost",
        actor=CANARIES["email"],
    )
    producer.send(settings.topic(ESCALATIONS), key=esc.key, value=esc.to_bytes())
    producer.flush()
    producer.close()

    worker = WorkerProcess(
        stream_env, tmp_path / "worker.log", TUTORLOOP_PRIVACY__SCRUBBER="presidio"
    )
    try:
        wait_until(
            lambda: (
                warehouse.path.exists() and warehouse.query("SELECT count(*) FROM cases")[0][0] == 4
            ),
            timeout=120,
        )
    finally:
        assert worker.stop() == 0
    dlq = _dlq_values(settings)
    assert len(dlq) == 1

    texts = [r[0] for r in warehouse.query("SELECT text FROM cases")]
    assert all("<" in t for t in texts)  # placeholders where the PII was
    haystacks: dict[str, bytes] = {"worker log": worker.log_path.read_bytes()}
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_bytes()
    for i, value in enumerate(dlq):
        haystacks[f"dlq record {i}"] = value
    assert any(name.endswith(".duckdb") for name in haystacks)
    leaks = [
        f"{kind} in {where}"
        for kind, canary in CANARIES.items()
        for where, data in haystacks.items()
        if canary.encode() in data or canary.lower().encode() in data.lower()
    ]
    assert leaks == []
