"""No Kafka payload in tutorloop's logs at any log level: a prediction's text must not leak."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tests.conftest import REPO, read_topic
from tests.streams_events import prediction
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import PREDICTIONS, ensure_topics
from tutorloop.streams.emitter import PredictionEmitter


def test_debug_logging_carries_no_kafka_payload(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_topics(settings, settings.broker.bootstrap_servers)
    canary = "CANARY-7f3a my card 4000 0000 0000 0002 was declined"
    with caplog.at_level(logging.DEBUG):
        with PredictionEmitter.from_settings(settings) as emitter:
            assert emitter.emit(prediction(confidence=0.2, text=canary))  # captured: sent
        values = read_topic(
            settings.broker.bootstrap_servers, settings.topic(PREDICTIONS), expected=1
        )
    assert any(canary.encode() in v for v in values)  # it really crossed the wire, uncompressed
    assert any(r.name.startswith("kafka") for r in caplog.records)  # its logs were captured
    assert "CANARY-7f3a" not in caplog.text and "bytearray(b'" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("kafka") and r.levelno < 20]


def test_importing_tutorloop_caps_the_kafka_loggers_before_any_client_loads() -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.DEBUG); import tutorloop\n"
        "print(logging.getLogger('kafka').getEffectiveLevel(),"
        " logging.getLogger('aiokafka.producer').getEffectiveLevel())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["20", "20"]
