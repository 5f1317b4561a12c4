"""The server `tutorloop serve` ran before issue #15 (http.server.ThreadingHTTPServer, one thread
per connection, one model call per request), kept only as the baseline of bench/serve_http.py.

    .venv/bin/python bench/_legacy_http_server.py DATA_DIR PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tutorloop.infra.settings import load_settings
from tutorloop.serving.prediction import NoChampionError, PredictRequest
from tutorloop.serving.predictor import Predictor


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


if __name__ == "__main__":
    settings = load_settings(data_dir=Path(sys.argv[1]))
    server = make_server(Predictor(settings), "127.0.0.1", int(sys.argv[2]))
    print("ready", flush=True)
    server.serve_forever()
