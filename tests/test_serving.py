"""The serving runtime over real HTTP: the int8 champion, events to a real broker, bad requests,
abstention, and hot reload on promote/rollback without a failed request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import read_topic, wait_until
from tests.registry_fixtures import first_version, next_version, registry_settings
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.settings import Settings
from tutorloop.infra.topics import PREDICTIONS, ensure_topics
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry.lifecycle import promote, rollback
from tutorloop.serving.fallback import Fallback
from tutorloop.serving.server import serving
from tutorloop.streams.emitter import PredictionEmitter
from tutorloop.streams.spool import DiskSpool

CLI = [sys.executable, "-m", "tutorloop"]


def _settings(tmp_path: Path, settings: Settings, **serving: Any) -> Settings:
    base = registry_settings(tmp_path / "reg")
    serve = base.serving.model_copy(update={"reload_poll_s": 0.2, **serving})
    return base.model_copy(update={"broker": settings.broker, "serving": serve})


def test_predict_bad_requests_and_events(tmp_path: Path, settings: Settings) -> None:
    cfg = _settings(tmp_path, settings, abstain_below=0.0)
    empty = cfg.model_copy(update={"data_dir": tmp_path / "empty"})
    with serving(empty, port=0) as server:
        url = server.url
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, but not ready
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["problems"] == ["no champion loaded"]
        none = httpx.post(f"{url}/predict", json={"text": "hi"})
        assert none.status_code == 503 and "no champion" in none.json()["error"]
        assert none.json()["code"] == "no_champion"

    first_version(cfg)
    ensure_topics(cfg, cfg.broker.bootstrap_servers)
    with (
        PredictionEmitter.from_settings(cfg) as emitter,
        serving(cfg, emitter=emitter, port=0) as server,
    ):
        url = server.url
        ok = httpx.post(
            f"{url}/predict",
            json={"text": "my card still has not arrived", "user_id": "u-9",
                  "consent": {"training": True}},
        )  # fmt: skip
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["model_version"] == "v1" and len(body["top_k"]) == 5
        assert body["label"] == body["top_k"][0][0] and not body["abstained"]
        bad = {
            "missing text": ({}, 400, "text: Field required"),
            "wrong type": ({"text": 5}, 400, "text: Input should be a valid string"),
            "blank": ({"text": "   "}, 400, "text: is blank"),
            "unknown field": ({"text": "a", "x": 1}, 400, "x: Extra inputs"),
            "oversize": ({"text": "a" * 9000}, 413, "over 8192"),
            "consent type": ({"text": "a", "consent": {"training": "yes"}}, 400, "consent"),
        }
        for name, (payload, status, message) in bad.items():
            r = httpx.post(f"{url}/predict", json=payload)
            assert (r.status_code, message in r.json()["error"]) == (status, True), name
        garbage = httpx.post(f"{url}/predict", content=b"{not json")
        assert (garbage.status_code, garbage.json()["code"]) == (400, "invalid_json")
        missing = httpx.get(f"{url}/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        assert httpx.get(f"{url}/predict").json()["code"] == "method_not_allowed"
        emitter.flush(10)
    [event] = read_topic(cfg.broker.bootstrap_servers, cfg.topic(PREDICTIONS), expected=1)
    sent = json.loads(event)
    assert sent["event_id"] == body["event_id"] and sent["model_version"] == "v1"
    assert sent["user_id"] == "u-9" and sent["consent"] == {"training": True}


def test_abstains_below_the_threshold(tmp_path: Path, settings: Settings) -> None:
    cfg = _settings(tmp_path, settings, abstain_below=0.999)
    first_version(cfg)
    with serving(cfg, port=0) as server:
        url = server.url
        body = httpx.post(f"{url}/predict", json={"text": "card"}).json()
        assert body["abstained"] is True and body["label"] is None
        assert body["answered_by"] == "nobody" and body["abstain_reason"] == "low_confidence"
        assert body["confidence"] < 0.999 and body["top_k"]
    asked: list[str] = []

    def teacher(text: str) -> str:
        asked.append(text)
        return "card_arrival"

    ensure_topics(cfg, cfg.broker.bootstrap_servers)
    with (
        PredictionEmitter.from_settings(cfg) as emitter,
        serving(cfg, emitter=emitter, port=0, fallback=Fallback(teacher)) as server,
    ):
        url = server.url
        body = httpx.post(f"{url}/predict", json={"text": "card"}).json()
        assert (body["label"], body["answered_by"], body["abstained"]) == (
            "card_arrival",
            "fallback",
            True,
        )
        assert asked == ["card"]
    [event] = read_topic(cfg.broker.bootstrap_servers, cfg.topic(PREDICTIONS), expected=1)
    sent = json.loads(event)  # the event says who answered, and with what
    assert (sent["answered_by"], sent["served_label"]) == ("fallback", "card_arrival")
    assert sent["label"] == body["top_k"][0][0]  # the student's own top label


@pytest.mark.timeout(900)
def test_hot_reload_on_promote_and_rollback_drops_no_request(
    tmp_path: Path, settings: Settings
) -> None:
    cfg = _settings(tmp_path, settings)
    first_version(cfg)
    second = next_version(cfg)
    warehouse = open_warehouse(cfg)
    if second.gates and second.gates["promoted"]:
        rollback(warehouse, cfg, actor="test")  # start the scenario from v1
    with serving(cfg, port=0) as server:
        url = server.url
        predictor = server.predictor
        assert predictor.version == "v1"
        seen: Counter[str] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    r = client.post(f"{url}/predict", json={"text": "card arrival"})
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        seen[r.json()["model_version"]] += 1

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            promote(warehouse, cfg, "v2", actor="test", reason="test", force=True)
            started = time.monotonic()
            wait_until(lambda: predictor.version == "v2", timeout=5, interval=0.05)
            switched = time.monotonic() - started
            before = seen["v2"]
            wait_until(lambda: seen["v2"] > before + 5, timeout=5, interval=0.05)
            rollback(warehouse, cfg, actor="test", reason="test")
            wait_until(lambda: predictor.version == "v1", timeout=5, interval=0.05)
            after = seen["v1"]
            wait_until(lambda: seen["v1"] > after + 5, timeout=5, interval=0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
    assert not failures, failures[:3]
    assert seen["v1"] > 5 and seen["v2"] > 5
    assert switched < 5


def test_the_serve_command_delivers_its_events_and_stops_cleanly_on_sigterm(
    tmp_path: Path, settings: Settings
) -> None:
    cfg = _settings(tmp_path, settings)
    first_version(cfg)
    ensure_topics(cfg, cfg.broker.bootstrap_servers)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    env |= {"TUTORLOOP_DATA_DIR": str(cfg.data_dir),
            "TUTORLOOP_BROKER__BOOTSTRAP_SERVERS": cfg.broker.bootstrap_servers,
            "TUTORLOOP_BROKER__TOPIC_PREFIX": cfg.broker.topic_prefix}  # fmt: skip
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=60, interval=0.2)
        ids = [httpx.post(f"{url}/predict", json={"text": f"card {i}"}).json()["event_id"]
               for i in range(20)]  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f"serving v1 on {url}" in out
    access = [json.loads(line) for line in err.splitlines() if line.startswith('{"method"')]
    assert sum(a["route"] == "/predict" for a in access) == 20
    values = read_topic(cfg.broker.bootstrap_servers, cfg.topic(PREDICTIONS), expected=20)
    assert sorted(json.loads(v)["event_id"] for v in values) == sorted(ids)
    assert DiskSpool(cfg.spool_dir, 1 << 20).records == 0  # all delivered before exiting


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
