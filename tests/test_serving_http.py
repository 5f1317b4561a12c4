"""The HTTP server's limits, security and operations over real sockets: a lying or missing
Content-Length, oversize and half-sent bodies, slow headers, saturation, bearer auth, TLS, the
exposure check, /metrics parsed by prometheus_client, the access log, graceful shutdown, and the
teacher fallback degrading to abstention."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli
from tests.registry_fixtures import first_version, registry_settings
from tutorloop.infra.settings import Settings
from tutorloop.serving.fallback import Fallback
from tutorloop.serving.server import ServingConfigError, serving


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A registry whose v1 is champion (trained once for the module)."""
    settings = registry_settings(tmp_path_factory.mktemp("http") / "data")
    first_version(settings)
    return settings


def _with(settings: Settings, **serving_fields: Any) -> Settings:
    return settings.model_copy(
        update={"serving": settings.serving.model_copy(update=serving_fields)}
    )


def _raw(port: int, payload: bytes, *, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes; read until the server closes or ``wait_s`` passes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(payload)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data, time.monotonic() - started


def test_limits_on_what_is_read(champion: Settings) -> None:
    cfg = _with(champion, body_timeout_s=1.0, header_timeout_s=1.0)
    with serving(cfg, port=0) as server:
        port = server.port
        negative, took = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: -1\r\n\r\n{}")  # fmt: skip
        assert negative.startswith(b"HTTP/1.1 400") and took < 1.5
        assert json.loads(negative.split(b"\r\n\r\n", 1)[1])["code"] == "invalid_http"
        big = 8192 * 4 + 4096 + 1
        oversize, took = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n{" % big)  # fmt: skip
        assert oversize.startswith(b"HTTP/1.1 413") and b"body_too_large" in oversize
        assert took < 1.5  # answered from the header, without waiting for the body
        chunk = b"a" * 30_000
        chunked = (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2 + b"0\r\n\r\n")  # fmt: skip
        assert _raw(port, chunked)[0].startswith(b"HTTP/1.1 413")
        half, took = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100\r\n\r\n{\"text\": ", wait_s=10)  # fmt: skip
        assert half.startswith(b"HTTP/1.1 408") and b"body_timeout" in half
        assert took < 2.5  # closed after body_timeout_s, not held
        slow_headers, took = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n", wait_s=10)
        assert slow_headers == b"" and took < 2.5  # connection closed by the header timeout
        idle, took = _raw(port, b"", wait_s=10)
        assert idle == b"" and took < 2.5
        ok = httpx.post(f"{server.url}/predict", json={"text": "where is my card"})
        assert ok.status_code == 200  # and the server still serves


def test_saturation_answers_503_with_retry_after(champion: Settings) -> None:
    cfg = _with(champion, max_concurrency=1, body_timeout_s=3.0)
    with serving(cfg, port=0) as server:
        holder = socket.create_connection(("127.0.0.1", server.port))
        holder.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        time.sleep(0.3)  # the held request is in flight, reading its body
        busy = httpx.post(f"{server.url}/predict", json={"text": "card"}, timeout=2)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["code"] == "saturated"
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes never refused
        holder.close()
        time.sleep(0.3)
        assert httpx.post(f"{server.url}/predict", json={"text": "card"}).status_code == 200


def test_bearer_auth_and_the_exposure_check(
    champion: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_TOKEN", "s3cret-token-of-enough-length")
    cfg = _with(champion, auth_token_env="TL_TOKEN")
    with serving(cfg, port=0) as server:
        url = server.url
        anonymous = httpx.post(f"{url}/predict", json={"text": "card"})
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthorized")
        wrong = {"Authorization": "Bearer s3cret-token-of-enough-lengtX"}
        assert httpx.post(f"{url}/predict", json={"text": "c"}, headers=wrong).status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        good = {"Authorization": "Bearer s3cret-token-of-enough-length"}
        assert httpx.post(f"{url}/predict", json={"text": "c"}, headers=good).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200  # probes stay open
        schema = httpx.get(f"{url}/openapi.json").json()
        assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    exposed = serving(champion, host="0.0.0.0", port=0)
    with pytest.raises(ServingConfigError, match="without authentication"), exposed:
        pass
    with serving(champion, host="0.0.0.0", port=0, insecure=True) as server:
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    monkeypatch.setenv("TL_TOKEN", "tiny-tok3n")
    with pytest.raises(ServingConfigError, match="TL_TOKEN") as refused, serving(cfg, port=0):
        pass
    assert "tiny-tok3n" not in str(refused.value)  # the value is never echoed


def test_serve_cli_refuses_an_exposed_address_in_one_line(champion: Settings) -> None:
    env = {"TUTORLOOP_DATA_DIR": str(champion.data_dir)}
    refused = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--no-emit", env=env)
    assert refused.returncode == 1
    assert "--insecure" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_tls(champion: Settings, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    cfg = _with(champion, tls_certfile=cert, tls_keyfile=key)
    with serving(cfg, port=0) as server:
        assert server.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        reply = httpx.post(f"{server.url}/predict", json={"text": "card"}, verify=trusted)
        assert reply.status_code == 200
        with pytest.raises((httpx.RemoteProtocolError, httpx.ConnectError)):  # no plain HTTP
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    handler = _Lines()
    logger = logging.getLogger("tutorloop.serving.access")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_metrics_parse_and_the_access_log_has_no_text_or_ids(
    champion: Settings, access_lines: list[str]
) -> None:
    with serving(champion, port=0) as server:
        for _ in range(5):
            body = {"text": "top up failed secretword", "user_id": "user-77"}
            r = httpx.post(f"{server.url}/predict", json=body)
            assert r.status_code == 200
        httpx.post(f"{server.url}/predict", json={})
        text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value
                for s in families["tutorloop_serving_requests"].samples
                if s.name.endswith("_total")}  # fmt: skip
    assert requests[("/predict", "200")] == 5 and requests[("/predict", "400")] == 1
    confidence = families["tutorloop_serving_confidence"]
    assert [s.value for s in confidence.samples if s.name.endswith("_count")] == [5]
    assert sum(s.value for s in families["tutorloop_serving_label"].samples
               if s.name.endswith("_total")) == 5  # fmt: skip
    [info] = families["tutorloop_serving_model_info"].samples
    assert info.labels == {"version": "v1", "role": "champion"}
    assert "tutorloop_serving_in_flight" in families
    assert "tutorloop_serving_request_seconds" in families
    logged = [json.loads(line) for line in access_lines]
    assert [(x["route"], x["status"]) for x in logged[:6]] == [("/predict", 200)] * 5 + [
        ("/predict", 400)
    ]
    assert logged[0]["model_version"] == "v1" and logged[0]["answered_by"] == "student"
    assert not any("secretword" in line or "user-77" in line for line in access_lines)


def test_graceful_shutdown_finishes_requests_in_flight(champion: Settings) -> None:
    cfg = _with(champion, abstain_below=0.9999, fallback_timeout_s=5.0)

    def slow_teacher(text: str) -> str:
        time.sleep(1.0)
        return "card_arrival"

    replies: list[httpx.Response] = []
    with serving(cfg, port=0, fallback=Fallback(slow_teacher, timeout_s=5.0)) as server:
        client = threading.Thread(
            target=lambda: replies.append(
                httpx.post(f"{server.url}/predict", json={"text": "card"}, timeout=10)
            )
        )
        client.start()
        time.sleep(0.3)  # in flight, waiting on the teacher
    client.join(10)
    assert [r.status_code for r in replies] == [200]
    assert replies[0].json()["answered_by"] == "fallback"


def test_fallback_degrades_to_abstention(champion: Settings) -> None:
    cfg = _with(champion, abstain_below=0.9999)

    def hanging(text: str) -> str:
        time.sleep(3)
        return "card_arrival"

    def failing(text: str) -> str:
        raise RuntimeError("teacher down")

    for teacher, outcome in ((hanging, "timeout"), (failing, "error")):
        fallback = Fallback(teacher, timeout_s=0.5)
        with serving(cfg, port=0, fallback=fallback) as server:
            started = time.monotonic()
            body = httpx.post(f"{server.url}/predict", json={"text": "card"}, timeout=10).json()
            took = time.monotonic() - started
        assert body["abstained"] and body["answered_by"] == "nobody" and body["label"] is None
        assert took < 1.5 and fallback.outcomes[outcome] == 1
    budget = Fallback(lambda text: "card_arrival", budget_per_hour=1)
    with serving(cfg, port=0, fallback=budget) as server:
        answers = [httpx.post(f"{server.url}/predict", json={"text": "card"}).json()
                   for _ in range(3)]  # fmt: skip
    assert [a["answered_by"] for a in answers] == ["fallback", "nobody", "nobody"]
    assert budget.outcomes["over_budget"] == 2
