"""The ASGI application (Starlette): ``POST /predict``, ``/healthz``, ``/readyz``, ``/metrics``,
``/openapi.json``.

Every error is JSON ``{"error": message, "code": stable_code}``. The guard in front of the
routes answers 503 + ``Retry-After`` beyond ``serving.max_concurrency`` requests in flight,
401 without the bearer token when one is configured (probes and the schema stay open), and
writes one access-log line per request: route, status, milliseconds, model version, who
answered — never the text or a user id.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tutorloop.serving.batcher import Batcher
from tutorloop.serving.drift import DriftMonitor
from tutorloop.serving.metrics import ServingMetrics
from tutorloop.serving.openapi import openapi_schema
from tutorloop.serving.prediction import NoChampionError, PredictRequest
from tutorloop.serving.predictor import Predictor

access_log = logging.getLogger("tutorloop.serving.access")
_OPEN = frozenset({"/healthz", "/readyz", "/openapi.json"})
_ROUTES = frozenset({"/predict", *_OPEN, "/metrics"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close = status, code, message, close

    def response(self) -> JSONResponse:
        headers = {"Connection": "close"} if self.close else None
        return JSONResponse({"error": self.message, "code": self.code}, self.status, headers)


@dataclass
class ServingState:
    """What the routes share: built by ``serving.server``, closed by it."""

    predictor: Predictor
    batcher: Batcher
    metrics: ServingMetrics
    drift: DriftMonitor
    token: str | None = None
    readiness: Callable[[], dict[str, Any]] = field(default=lambda: {})


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes (counted as read: chunked bodies and lying
    Content-Length included), within ``timeout_s`` in all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes", close=True)
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size = 0
    stream = request.stream().__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(left, 0.001))
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise ApiError(408, "body_timeout", f"body not received within {timeout_s:g} s",
                           close=True) from None  # fmt: skip
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes", close=True)
        chunks.append(chunk)


def _validated(body: bytes, max_chars: int) -> PredictRequest:
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        code = "invalid_json" if first["type"] == "json_invalid" else "invalid_request"
        raise ApiError(400, code, f"{where}: {first['msg']}") from None
    if len(request.text) > max_chars:
        raise ApiError(413, "text_too_long",
                       f"text is {len(request.text)} characters, over {max_chars}")  # fmt: skip
    if not request.text.strip():
        raise ApiError(400, "invalid_request", "text: is blank")
    return request


async def predict(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    cfg = state.predictor.cfg
    body = await _read_body(request, cfg.max_text_chars * 4 + 4096, cfg.body_timeout_s)
    query = _validated(body, cfg.max_text_chars)
    try:
        prediction = await state.batcher.predict(query)
    except NoChampionError as exc:
        raise ApiError(503, "no_champion", str(exc)) from None
    fallback = state.predictor.fallback
    if prediction.abstained and fallback is not None:
        answer = await fallback.ask_async(query.text)
        if answer is not None:
            prediction = prediction.answered(answer, "fallback")
    state.predictor.emit(query, prediction)  # once the answer is final: who gave it, and what
    state.metrics.observe(prediction)
    if prediction.model_version == state.predictor.version:
        state.drift.record(prediction.model_version, prediction.top_k[0][0],
                           prediction.confidence, prediction.abstained)  # fmt: skip
    request.scope["tutorloop.log"] = {
        "model_version": prediction.model_version, "answered_by": prediction.answered_by,
    }  # fmt: skip
    return JSONResponse(prediction.to_dict())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    report = state.readiness()
    return JSONResponse(report, 200 if report.get("ready") else 503)


async def metrics(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    rollout = state.predictor.rollout.current
    roles = {"champion": state.predictor.version}
    if rollout is not None:
        roles[rollout.state.mode] = rollout.version
    state.metrics.set_models(roles)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema(request.app.state.serving.token is not None))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return JSONResponse({"error": str(getattr(exc, "detail", code)), "code": code}, status)


async def _internal(request: Request, exc: Exception) -> Response:
    logging.getLogger(__name__).error("request failed: %s", type(exc).__name__, exc_info=exc)
    return JSONResponse({"error": "internal error (logged)", "code": "internal"}, 500)


class Guard:
    """Pure ASGI in front of the routes: concurrency cap, auth, latency, access log."""

    def __init__(self, app: ASGIApp, state: ServingState, max_in_flight: int) -> None:
        self.app, self.state, self.max = app, state, max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in _ROUTES else "other"
        started = time.perf_counter()
        status = [500]

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refused = self._refusal(scope, path)
        if refused is not None:
            self.state.metrics.rejected.labels(refused.code).inc()
            await refused.response()(scope, receive, tracking_send)
        else:
            await self._serve(scope, receive, tracking_send)
        self._log(scope, route, status[0], time.perf_counter() - started)

    def _refusal(self, scope: Scope, path: str) -> ApiError | None:
        token = self.state.token
        if token is not None and path not in _OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + token.encode()):
                return ApiError(401, "unauthorized", "missing or wrong bearer token")
        if self.in_flight >= self.max and path not in _OPEN:
            return _SaturatedError(self.max)
        return None

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.in_flight += 1
        self.state.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.state.metrics.in_flight.dec()

    def _log(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        metrics = self.state.metrics
        metrics.latency.labels(route).observe(seconds)
        metrics.requests.labels(route, str(status)).inc()
        if access_log.isEnabledFor(logging.INFO):
            line = {"method": scope["method"], "route": route, "status": status,
                    "ms": round(seconds * 1000, 3), **scope.get("tutorloop.log", {})}  # fmt: skip
            access_log.info(json.dumps(line))


class _SaturatedError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(503, "saturated", f"over {limit} requests in flight; retry shortly")

    def response(self) -> JSONResponse:
        reply = super().response()
        reply.headers["Retry-After"] = "1"
        return reply


def build_app(state: ServingState) -> ASGIApp:
    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    handlers = {ApiError: _api_error, 404: _http_error, 405: _http_error, Exception: _internal}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.serving = state
    return Guard(app, state, state.predictor.cfg.max_concurrency)
