"""The OpenAPI 3.1 document of the server (``GET /openapi.json``), from the pydantic models."""

from __future__ import annotations

from functools import cache
from typing import Any

from tutorloop.serving.prediction import PredictRequest, PredictResponse

_ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "one line, for people"},
        "code": {
            "type": "string",
            "description": "stable, for programs",
            "enum": [
                "invalid_http", "invalid_json", "invalid_request", "body_too_large",
                "text_too_long", "body_timeout", "unauthorized", "saturated", "no_champion",
                "not_found", "method_not_allowed", "internal",
            ],
        },
    },
}  # fmt: skip


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {str(s): {"description": "error", **ref} for s in statuses}


@cache
def openapi_schema(auth: bool) -> dict[str, Any]:
    from tutorloop import __version__

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "tutorloop serving", "version": __version__},
        "paths": {
            "/predict": {"post": {
                "summary": "Classify one text with the champion (or a canary's version)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
                "responses": {
                    "200": {"description": "prediction", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/PredictResponse"}}}},
                    **_errors(400, 401, 408, 413, 503),
                },
            }},
            "/healthz": {"get": {"summary": "alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "model loaded and contract satisfied",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus text format",
                                 "responses": {"200": {"description": "metrics"}}}},
        },
        "components": {"schemas": {
            "PredictRequest": PredictRequest.model_json_schema(),
            "PredictResponse": PredictResponse.model_json_schema(),
            "Error": _ERROR,
        }},
    }  # fmt: skip
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for route in ("/predict", "/metrics"):
            for op in doc["paths"][route].values():
                op["security"] = [{"bearer": []}]
    return doc
