"""Run the ASGI app on uvicorn: limits, TLS, auth and exposure checks, graceful shutdown.

- A connection must send its request headers within ``serving.header_timeout_s`` (uvicorn has
  no such timeout of its own: a slow-headers client would hold its connection forever) and its
  body within ``serving.body_timeout_s`` (the app); idle keep-alive ends after
  ``serving.keep_alive_s``.
- Binding anything but a loopback address without a bearer token is refused unless the
  caller says ``insecure`` (``tutorloop serve --insecure``).
- Shutdown (SIGTERM/SIGINT in ``tutorloop serve``): stop accepting, let requests in flight
  finish (up to ``serving.shutdown_timeout_s``), then close the scorer, write the last live
  windows and flush the emitter.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.registry.contract import load_contract
from tutorloop.serving.app import ServingState, build_app
from tutorloop.serving.batcher import Batcher
from tutorloop.serving.drift import DriftMonitor
from tutorloop.serving.fallback import Fallback
from tutorloop.serving.live import LiveWindows
from tutorloop.serving.metrics import ServingMetrics
from tutorloop.serving.predictor import Predictor

if TYPE_CHECKING:
    from tutorloop.streams.emitter import Emitter

log = logging.getLogger(__name__)


class ServingConfigError(TutorloopError):
    """The server cannot start as configured (exposure, token, TLS files, port)."""


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections that do not finish their headers."""

    header_timeout_s = 5.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (a negative Content-Length, bad framing) gets the JSON error shape
        every other refusal has, not uvicorn's plain text."""
        body = json.dumps({"error": msg, "code": "invalid_http"}).encode()
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))  # fmt: skip
        self.transport.write(head + body)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM/SIGINT only starts the graceful shutdown:
    uvicorn re-raises the signal once it stopped serving, which would kill the process before
    ``tutorloop serve`` delivers its spooled events and writes its last windows."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bearer_token(settings: Settings) -> str | None:
    """The token named by ``serving.auth_token_env`` (never echoed in an error)."""
    name = settings.serving.auth_token_env
    if not name:
        return None
    token = os.environ.get(name, "")
    if len(token) < 16:
        raise ServingConfigError(
            f"serving.auth_token_env names {name}, which is unset or shorter than 16 characters"
        )
    return token


def check_exposure(host: str, token: str | None, *, insecure: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and token is None and not insecure:
        raise ServingConfigError(
            f"refusing to serve on {host} without authentication: set serving.auth_token_env "
            "(a bearer token from the environment) or pass --insecure"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class RunningServer:
    """A started server: where it listens and what it serves."""

    predictor: Predictor
    state: ServingState
    live: LiveWindows
    host: str
    port: int
    scheme: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _readiness(predictor: Predictor, settings: Settings, emitter: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"model_version": predictor.version}
    problems: list[str] = []
    if predictor.version is None:
        problems.append("no champion loaded")
    try:
        labels = load_contract(settings).task.labels
        if labels and predictor.version and sorted(labels) != sorted(predictor.labels):
            problems.append("the champion's labels differ from the contract's task.labels")
    except TutorloopError as exc:
        problems.append(str(exc))
    describe = getattr(emitter, "describe", None)
    report["events"] = describe() if describe else ("off" if emitter is None else "on")
    report["ready"] = not problems
    report["problems"] = problems
    return report


def _prepare(
    settings: Settings, emitter: Emitter | None, fallback: Fallback | None,
    token: str | None,
) -> tuple[Predictor, ServingState, LiveWindows]:  # fmt: skip
    cfg = settings.serving
    predictor = Predictor(settings, emitter=emitter, fallback=fallback)
    metrics = ServingMetrics()
    drift = DriftMonitor(reference_size=cfg.drift_reference_size,
                         min_window=cfg.drift_min_window, psi_max=cfg.drift_psi_max)  # fmt: skip
    state = ServingState(
        predictor=predictor, metrics=metrics,
        batcher=Batcher(partial(predictor.score, emit=False), cfg.batch_max,
                        cfg.scorers or os.cpu_count() or 1),
        drift=drift, token=token,
        readiness=lambda: _readiness(predictor, settings, emitter),
    )  # fmt: skip
    stats = getattr(emitter, "stats", None)
    if stats is not None:
        metrics.gauge_from("emitter_queued", "events waiting for the broker",
                           lambda: float(getattr(emitter, "queued", 0)))  # fmt: skip
        metrics.gauge_from("emitter_dropped", "events dropped (spool full)",
                           lambda: float(stats.dropped))  # fmt: skip
    if fallback is not None:
        for outcome in ("answered", "no_answer", "timeout", "error", "busy", "over_budget"):
            metrics.fallbacks.labels(outcome).set_function(_reader(fallback.outcomes, outcome))
    live = LiveWindows(settings, predictor, drift, metrics)
    return predictor, state, live


def _reader(counts: Counter[str], key: str) -> Callable[[], float]:
    return lambda: float(counts[key])


def _access_log(enabled: bool) -> None:
    """JSON lines on stderr, unformatted: a rich log line per request would cost more than
    the request itself."""
    logger = logging.getLogger("tutorloop.serving.access")
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    if enabled and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def _uvicorn(settings: Settings, app: Any, *, quiet: bool) -> uvicorn.Server:
    cfg = settings.serving
    _HeaderTimeoutProtocol.header_timeout_s = cfg.header_timeout_s
    config = uvicorn.Config(
        app, http=_HeaderTimeoutProtocol, lifespan="off", access_log=False,
        log_config=None, timeout_keep_alive=max(1, round(cfg.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(cfg.shutdown_timeout_s)),
        ssl_certfile=str(cfg.tls_certfile) if cfg.tls_certfile else None,
        ssl_keyfile=str(cfg.tls_keyfile) if cfg.tls_keyfile else None,
        server_header=False, log_level="warning" if quiet else None,
    )  # fmt: skip
    try:
        config.load()
    except (OSError, ValueError) as exc:
        raise ServingConfigError(f"cannot load the TLS certificate or key: {exc}") from None
    return _Server(config)


def _start(
    settings: Settings, emitter: Emitter | None, host: str | None, port: int | None,
    fallback: Fallback | None, insecure: bool, *, quiet: bool = False,
) -> tuple[uvicorn.Server, socket.socket, RunningServer]:  # fmt: skip
    cfg = settings.serving
    host = host or cfg.host
    token = bearer_token(settings)
    check_exposure(host, token, insecure=insecure)
    sock = _bind(host, cfg.port if port is None else port)
    predictor, state, live = _prepare(settings, emitter, fallback, token)
    _access_log(cfg.access_log)
    server = _uvicorn(settings, build_app(state), quiet=quiet)
    scheme = "https" if cfg.tls_certfile else "http"
    running = RunningServer(predictor, state, live, host, sock.getsockname()[1], scheme)
    predictor.start_watching()
    live.start()
    return server, sock, running


def _close(running: RunningServer) -> None:
    running.state.batcher.close()
    running.live.close()
    running.predictor.close()
    if running.predictor.fallback is not None:
        running.predictor.fallback.close()


@contextmanager
def serving(
    settings: Settings,
    *,
    emitter: Emitter | None = None,
    host: str | None = None,
    port: int | None = None,
    fallback: Fallback | None = None,
    insecure: bool = False,
) -> Iterator[RunningServer]:
    """The server in a background thread while the body runs; then a graceful shutdown.
    uvicorn's own start/stop lines are left out: the embedding program has its own output."""
    server, sock, running = _start(settings, emitter, host, port, fallback, insecure, quiet=True)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="uvicorn")  # fmt: skip
    thread.start()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.01)
        yield running
    finally:
        server.should_exit = True
        thread.join(settings.serving.shutdown_timeout_s + 5)
        sock.close()
        _close(running)


def serve_forever(
    settings: Settings, *, emitter: Emitter | None, host: str | None, port: int | None,
    fallback: Fallback | None, insecure: bool, announce: Callable[[RunningServer], None],
) -> None:  # fmt: skip
    """``tutorloop serve``: run in the main thread until SIGTERM/SIGINT, then drain."""
    server, sock, running = _start(settings, emitter, host, port, fallback, insecure)
    announce(running)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        _close(running)
