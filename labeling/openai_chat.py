"""One chat completion from an OpenAI-compatible endpoint, with retries and backoff.

The teacher (:mod:`tutorloop.labeling.teacher_openai`) and the writer of synthetic cases
(:mod:`tutorloop.labeling.synthesis`) ask the same endpoint: 429, 5xx and timeouts are
retried with jittered exponential backoff (a ``Retry-After`` header wins), anything else
fails at once. A failure is a :class:`~tutorloop.labeling.teacher.TeacherFailure` whose
message never quotes the request. The API key is read from the environment variable the
settings name and sent only in the Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.teacher import ErrorKind, TeacherFailure

#: Statuses worth another attempt (the chat endpoint and the embeddings client).
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def request_headers(cfg: OpenAITeacherSettings) -> dict[str, str]:
    """JSON, and the key (from the variable the settings name) in the Authorization header."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(cfg.api_key_env, "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def json_answer(content: str) -> Any:
    """The JSON a model answered with, a Markdown code fence around it allowed (ValueError
    when it is not JSON)."""
    return json.loads(_FENCE.sub("", content.strip()))


@dataclass(frozen=True)
class ChatReply:
    """The first choice's text (and logprobs, when asked for), with what it cost."""

    content: str
    logprobs: Any
    tokens: int
    cost_usd: float


@asynccontextmanager
async def chat_client(cfg: OpenAITeacherSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``cfg``'s endpoint with ``concurrency`` connections."""
    async with httpx.AsyncClient(
        base_url=cfg.base_url.rstrip("/") + "/",
        headers=request_headers(cfg),
        timeout=cfg.timeout_s,
        limits=httpx.Limits(max_connections=cfg.concurrency),
    ) as client:
        yield client


class _RetryableError(Exception):
    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.retry_after = retry_after


async def complete(
    client: httpx.AsyncClient, cfg: OpenAITeacherSettings, body: dict[str, Any]
) -> ChatReply | TeacherFailure:
    """POST ``chat/completions`` until it answers or the retries are spent."""
    delay = cfg.backoff_initial_s
    last: _RetryableError | None = None
    for attempt in range(cfg.max_retries + 1):
        if attempt:
            wait = last.retry_after if last and last.retry_after is not None else delay
            await asyncio.sleep(min(wait, cfg.backoff_max_s) * random.uniform(0.8, 1.2))
            delay = min(delay * 2, cfg.backoff_max_s)
        try:
            return await _attempt(client, cfg, body)
        except _RetryableError as exc:
            last = exc
    assert last is not None
    return TeacherFailure(last.kind, f"{last} (gave up after {cfg.max_retries + 1} attempts)")


async def _attempt(
    client: httpx.AsyncClient, cfg: OpenAITeacherSettings, body: dict[str, Any]
) -> ChatReply | TeacherFailure:
    try:
        response = await client.post("chat/completions", json=body)
    except httpx.TimeoutException:
        raise _RetryableError("timeout", f"no answer within {cfg.timeout_s:g} s") from None
    except httpx.TransportError as exc:
        raise _RetryableError("http", f"connection failed: {type(exc).__name__}") from None
    if response.status_code in RETRY_STATUS:
        raise _RetryableError(
            "http", f"HTTP {response.status_code}", _retry_after(response.headers)
        )
    if response.status_code >= 400:
        return TeacherFailure("http", f"HTTP {response.status_code}: {_error_of(response)}")
    try:
        payload = response.json()
        choice = payload["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return TeacherFailure("malformed", "response is not a chat completion")
    tokens, cost = _usage(cfg, payload.get("usage"))
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        return TeacherFailure("refusal", "the model refused to answer", cost, tokens)
    return ChatReply(message.get("content") or "", choice.get("logprobs"), tokens, cost)


def _usage(cfg: OpenAITeacherSettings, usage: Any) -> tuple[int, float]:
    if not isinstance(usage, dict):
        return 0, 0.0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cost = (prompt * cfg.input_usd_per_mtok + completion * cfg.output_usd_per_mtok) / 1e6
    return prompt + completion, cost


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    return str(message)[:200]
