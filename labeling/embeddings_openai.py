"""Sentence embeddings from an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

What representation distillation pulls the student toward when the teacher is an LLM
endpoint (``teacher.openai.embeddings_model``). The texts are the dataset's, already scrubbed:
the same texts the chat teacher was sent. The key travels only in the Authorization header.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import httpx
import numpy as np

from tutorloop.evaluation.metrics import FloatArray
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.openai_chat import RETRY_STATUS, request_headers

_BATCH = 64  # inputs per request: well under every provider's per-request cap


class EmbeddingsUnavailableError(TutorloopError):
    """The endpoint did not give usable embeddings (after retries)."""


class OpenAIEmbeddings:
    """Embeds texts ``_BATCH`` at a time with retries and backoff; rows L2-normalized."""

    def __init__(self, cfg: OpenAITeacherSettings) -> None:
        if not cfg.embeddings_model:
            raise EmbeddingsUnavailableError("teacher.openai.embeddings_model is not set")
        self.cfg = cfg

    @property
    def source(self) -> str:
        return f"openai:{self.cfg.embeddings_model}"

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        headers = request_headers(self.cfg)
        rows: list[list[float]] = []
        with httpx.Client(
            base_url=self.cfg.base_url.rstrip("/") + "/", headers=headers,
            timeout=self.cfg.timeout_s,
        ) as client:  # fmt: skip
            for start in range(0, len(texts), _BATCH):
                rows += self._batch(client, list(texts[start : start + _BATCH]))
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.clip(norms, 1e-12, None), dtype=np.float32)

    def _batch(self, client: httpx.Client, texts: list[str]) -> list[list[float]]:
        body = {"model": self.cfg.embeddings_model, "input": texts}
        delay = self.cfg.backoff_initial_s
        problem = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(min(delay, self.cfg.backoff_max_s) * random.uniform(0.8, 1.2))
                delay *= 2
            try:
                response = client.post("embeddings", json=body)
            except httpx.HTTPError as exc:
                problem = f"connection failed: {type(exc).__name__}"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise EmbeddingsUnavailableError(f"embeddings: HTTP {response.status_code}")
            return _parsed(response, len(texts))
        raise EmbeddingsUnavailableError(
            f"embeddings: {problem} (gave up after {self.cfg.max_retries + 1} attempts)"
        )


def _parsed(response: httpx.Response, expected: int) -> list[list[float]]:
    """The ``data`` rows in input order (the API returns an ``index`` per row)."""
    try:
        data = sorted(response.json()["data"], key=lambda row: int(row["index"]))
        rows = [[float(x) for x in row["embedding"]] for row in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingsUnavailableError("embeddings: response is not an embeddings list") from exc
    if len(rows) != expected or len({len(row) for row in rows}) != 1:
        raise EmbeddingsUnavailableError(
            f"embeddings: {len(rows)} rows of uneven or wrong shape for {expected} texts"
        )
    return rows
