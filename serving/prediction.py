"""What a request and a prediction are, and how a served model is loaded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.tables import DEFAULT_TENANT
from tutorloop.registry.artifact_store import StoreUnavailableError
from tutorloop.registry.onnx_model import OnnxStudent, load_onnx_student
from tutorloop.registry.store import ArtifactIntegrityError

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
    tenant_id: str = Field(default=DEFAULT_TENANT, min_length=1, max_length=256)
    request_id: str | None = Field(default=None, min_length=1, max_length=256)
    consent: _Consent = Field(default_factory=_Consent)


class PredictResponse(BaseModel):
    """The body of a 200 reply to ``POST /predict`` (for the OpenAPI schema)."""

    request_id: str
    event_id: str
    model_version: str
    label: str | None = Field(description="null when abstaining and no fallback answered")
    confidence: float
    abstained: bool
    abstain_reason: str | None = Field(
        default=None, description="low_confidence or out_of_scope; null when not abstaining"
    )
    answered_by: str = Field(description="student, fallback or nobody")
    top_k: list[tuple[str, float]]


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
    abstain_reason: str | None = None  # "low_confidence" or "out_of_scope" when abstaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "event_id": self.event_id,
            "model_version": self.model_version,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "abstained": self.abstained,
            "abstain_reason": self.abstain_reason,
            "answered_by": self.answered_by,
            "top_k": [[label, round(p, 6)] for label, p in self.top_k],
        }

    def answered(self, label: str | None, by: str) -> Prediction:
        return replace(self, label=label, answered_by=by)


def load_model(
    folder: Path | Callable[[], Path], version: str | None, threads: int, *, retrieval: bool = False
) -> OnnxStudent | None:
    """The int8 model of a version folder (or of the folder a callable fetches), warmed up;
    None (logged) when its files fail their checksums or it cannot load. A failure to reach
    the artifact store raises: the caller retries at its next poll."""
    try:
        path = folder() if callable(folder) else folder
        model = load_onnx_student(path, threads=threads, retrieval=retrieval)
    except ArtifactIntegrityError as exc:
        log.error("refusing model %s: %s", version, exc)
        return None
    except StoreUnavailableError:
        raise
    except Exception as exc:  # keep serving what is loaded; say why loudly
        log.error("cannot load model %s: %s", version, exc)
        return None
    model.logits(["warm up"])  # the first ONNX Runtime call is slow: not on a request
    return model
