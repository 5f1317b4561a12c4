"""The serving runtime: the champion's int8 ONNX model behind a Python API and an HTTP endpoint.

- ``Predictor.predict(text, ...)``: calibrated top-k, abstention below
  ``serving.abstain_below`` (optionally answered by a fallback, e.g. a teacher's
  ``label_batch``), and one prediction event per request through the streams emitter (the
  stream workers capture, scrub and store it).
- Hot reload: a thread polls ``<artifacts>/champion.json`` (written on promote and rollback)
  every ``registry.reload_poll_s``; a new champion is loaded next to the old one and swapped
  in under a lock, so requests in flight finish on the model they started with and none is
  dropped.
- HTTP (``tutorloop serve``): ``POST /predict`` with JSON ``{"text": ..., "user_id": ...,
  "tenant_id": ..., "consent": {"training": bool}, "request_id": ...}`` (only ``text`` is
  required); ``GET /healthz``. Bad requests get a 4xx and a one-line JSON error.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.registry.lifecycle import pointer_path, read_pointer
from tutorloop.registry.onnx_model import OnnxStudent, load_onnx_student

if TYPE_CHECKING:
    from tutorloop.streams.emitter import Emitter

log = logging.getLogger(__name__)
ANONYMOUS = "anonymous"


class NoChampionError(TutorloopError):
    """There is no champion to serve yet."""


class _Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    training: bool = False


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(min_length=1)
    user_id: str = Field(default=ANONYMOUS, min_length=1, max_length=256)
    tenant_id: str = Field(default="default", min_length=1, max_length=256)
    request_id: str | None = Field(default=None, min_length=1, max_length=256)
    consent: _Consent = Field(default_factory=_Consent)


@dataclass(frozen=True)
class Prediction:
    request_id: str
    event_id: str
    model_version: str
    label: str | None  # None when abstaining without a fallback answer
    confidence: float
    abstained: bool
    top_k: list[tuple[str, float]]
    answered_by: str = "student"  # "student", "fallback" or "nobody"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "event_id": self.event_id,
            "model_version": self.model_version,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "abstained": self.abstained,
            "answered_by": self.answered_by,
            "top_k": [[label, round(p, 6)] for label, p in self.top_k],
        }


class Predictor:
    """Thread-safe predictions from the current champion, reloaded on promotion/rollback."""

    def __init__(
        self,
        settings: Settings,
        *,
        emitter: Emitter | None = None,
        top_k: int = 5,
        fallback: Callable[[str], tuple[str, float] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.fallback = fallback
        self.cfg = settings.serving
        self.emitter = emitter
        self.top_k = top_k
        self._lock = threading.Lock()
        self._model: OnnxStudent | None = None
        self._pointer_mtime: float | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reload()

    @property
    def version(self) -> str | None:
        model = self._model
        return model.version if model else None

    def reload(self) -> bool:
        """Load the published champion if it changed; True when a new model was swapped in."""
        path = pointer_path(self.settings)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._pointer_mtime:
            return False
        pointer = read_pointer(self.settings)
        self._pointer_mtime = mtime
        if not pointer or not pointer.get("artifact_dir"):
            return False
        if self._model is not None and pointer["version"] == self._model.version:
            return False
        try:
            model = load_onnx_student(Path(pointer["artifact_dir"]), threads=self.cfg.threads)
        except Exception as exc:  # keep serving the old model; say why loudly
            log.error("cannot load champion %s, still serving %s: %s",
                      pointer.get("version"), self.version, exc)  # fmt: skip
            return False
        model.logits(["warm up"])  # the first ONNX Runtime call is slow: not on a request
        with self._lock:
            previous, self._model = self._model, model
        log.info("serving %s (was %s)", model.version, previous.version if previous else None)
        return True

    def start_watching(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.cfg.reload_poll_s):
                try:
                    self.reload()
                except Exception:  # never let the watcher die
                    log.exception("champion reload check failed")

        self._watcher = threading.Thread(target=loop, name="champion-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def predict(self, request: PredictRequest) -> Prediction:
        with self._lock:
            model = self._model
        if model is None:
            raise NoChampionError("no champion to serve: promote a model version first")
        probs = model.predict_proba([request.text])[0]
        order = probs.argsort()[::-1][: self.top_k]
        top = [(model.labels[i], float(probs[i])) for i in order]
        label, confidence = top[0]
        abstained = confidence < self.cfg.abstain_below
        answer: str | None = label
        answered_by = "student"
        if abstained:
            answer, answered_by = None, "nobody"
            if self.fallback is not None:
                try:
                    backup = self.fallback(request.text)
                except Exception:  # a failing fallback must not fail the request
                    log.exception("fallback failed; abstaining")
                    backup = None
                if backup is not None:
                    answer, answered_by = backup[0], "fallback"
        prediction = Prediction(
            request_id=request.request_id or uuid.uuid4().hex,
            event_id=str(uuid.uuid4()),
            model_version=model.version,
            label=answer,
            confidence=confidence,
            abstained=abstained,
            top_k=top,
            answered_by=answered_by,
        )
        if self.emitter is not None:
            self._emit(self.emitter, request, prediction, label)
        return prediction

    @staticmethod
    def _emit(
        emitter: Emitter, request: PredictRequest, prediction: Prediction, label: str
    ) -> None:
        from tutorloop.streams.events import Consent, PredictionEvent, TopK, now_utc

        emitter.emit(
            PredictionEvent(
                event_id=uuid.UUID(prediction.event_id),
                ts=now_utc(),
                tenant_id=request.tenant_id,
                user_id=request.user_id,
                request_id=prediction.request_id,
                model_version=prediction.model_version,
                text=request.text,
                label=label,
                confidence=prediction.confidence,
                top_k=TopK.from_pairs(prediction.top_k),
                consent=Consent(training=request.consent.training),
            )
        )


def _error(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
    _reply(handler, status, {"error": message})


def _reply(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    raw = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def make_server(predictor: Predictor, host: str, port: int) -> ThreadingHTTPServer:
    max_chars = predictor.cfg.max_text_chars
    max_body = max_chars * 4 + 4096  # UTF-8 worst case plus the other fields

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines would carry nothing useful, and never the text

        def do_GET(self) -> None:
            if self.path != "/healthz":
                _error(self, 404, f"no route GET {self.path}")
                return
            version = predictor.version
            status = {"status": "ok" if version else "no champion", "model_version": version}
            _reply(self, 200 if version else 503, status)

        def do_POST(self) -> None:
            if self.path != "/predict":
                _error(self, 404, f"no route POST {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                _error(self, 400, "invalid Content-Length")
                return
            if length > max_body:
                self.rfile.read(min(length, max_body))
                self.close_connection = True
                _error(self, 413, f"request body over {max_body} bytes")
                return
            body = self.rfile.read(length)
            try:
                request = PredictRequest.model_validate_json(body)
            except ValidationError as exc:
                _error(self, 400, _describe(exc))
                return
            if len(request.text) > max_chars:
                _error(self, 413, f"text is {len(request.text)} characters, over {max_chars}")
                return
            if not request.text.strip():
                _error(self, 400, "text: is blank")
                return
            try:
                prediction = predictor.predict(request)
            except NoChampionError as exc:
                _error(self, 503, str(exc))
                return
            _reply(self, 200, prediction.to_dict())

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


@contextmanager
def serving(
    settings: Settings,
    *,
    emitter: Emitter | None = None,
    host: str | None = None,
    port: int | None = None,
    fallback: Callable[[str], tuple[str, float] | None] | None = None,
) -> Iterator[tuple[Predictor, ThreadingHTTPServer]]:
    """Start the predictor, its champion watcher and the HTTP server in a thread."""
    predictor = Predictor(settings, emitter=emitter, fallback=fallback)
    predictor.start_watching()
    server = make_server(
        predictor, host or settings.serving.host,
        settings.serving.port if port is None else port,
    )  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    try:
        yield predictor, server
    finally:
        server.shutdown()
        server.server_close()
        predictor.close()
