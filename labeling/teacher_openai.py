"""A teacher behind any OpenAI-compatible chat-completions endpoint.

vLLM, llama.cpp's server, Ollama and hosted APIs all speak ``POST {base_url}/chat/completions``.
The model is shown the label set and asked for strict JSON (label, confidence, rationale).
Soft targets come from the token logprobs of the label value where the endpoint returns them;
otherwise the answer is one-hot on the stated label with the stated confidence.

The API key is read from the environment variable the configuration names and is sent only in
the Authorization header: it never appears in a log line, an error or the warehouse.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tutorloop.infra.hashing import fingerprint
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.teacher import (
    ErrorKind,
    TeacherAnswer,
    TeacherFailure,
    TeacherInfo,
    TeacherResult,
    normalized,
    one_hot,
)

PROMPT_VERSION = 1

_SYSTEM = """You label customer messages for a text classifier.
Choose exactly one label from this list:
{labels}

Answer with one JSON object and nothing else:
{{"label": "<a label from the list, spelled exactly>", "confidence": <number from 0 to 1>, \
"rationale": "<one short sentence>"}}
If no label fits well, choose the closest one and give a low confidence."""

_LABEL_VALUE = re.compile(r'"label"\s*:\s*"')
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
#: Statuses worth another attempt (the chat teacher and the embeddings client).
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def request_headers(cfg: OpenAITeacherSettings) -> dict[str, str]:
    """JSON, and the key (from the variable the settings name) in the Authorization header."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(cfg.api_key_env, "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@dataclass(frozen=True)
class _Usage:
    tokens: int
    cost_usd: float


class _RetryableError(Exception):
    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.retry_after = retry_after


class OpenAITeacher:
    """Labels texts concurrently (``concurrency`` requests in flight) with retries and backoff."""

    def __init__(self, cfg: OpenAITeacherSettings, labels: Sequence[str]) -> None:
        if len(labels) < 2:
            raise ValueError("a teacher needs at least two labels")
        self.cfg = cfg
        self.labels = tuple(labels)
        self._lookup = {label.lower(): label for label in self.labels}
        self._system = _SYSTEM.format(labels="\n".join(f"- {label}" for label in self.labels))
        prompt_hash = fingerprint(str(PROMPT_VERSION), self._system, length=12)
        self._info = TeacherInfo(
            teacher_id=f"openai:{cfg.model}:{prompt_hash}", version=cfg.model, labels=self.labels
        )

    @property
    def info(self) -> TeacherInfo:
        return self._info

    @property
    def preferred_batch(self) -> int:
        """The relabel job asks this many at a time: a kill loses at most these answers."""
        return self.cfg.concurrency

    def label_batch(self, texts: Sequence[str]) -> list[TeacherResult]:
        return asyncio.run(self._label_all(texts))

    async def _label_all(self, texts: Sequence[str]) -> list[TeacherResult]:
        headers = request_headers(self.cfg)
        limit = asyncio.Semaphore(self.cfg.concurrency)
        async with httpx.AsyncClient(
            base_url=self.cfg.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=self.cfg.timeout_s,
            limits=httpx.Limits(max_connections=self.cfg.concurrency),
        ) as client:

            async def one(text: str) -> TeacherResult:
                async with limit:
                    return await self._label_one(client, text)

            return list(await asyncio.gather(*(one(text) for text in texts)))

    def _body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": self._system},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "max_tokens": 256,
            "response_format": {"type": "json_object"},
        }
        if self.cfg.logprobs:
            body["logprobs"] = True
            if self.cfg.top_logprobs:
                body["top_logprobs"] = self.cfg.top_logprobs
        return body

    async def _label_one(self, client: httpx.AsyncClient, text: str) -> TeacherResult:
        body = self._body(text)
        delay = self.cfg.backoff_initial_s
        last: _RetryableError | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                wait = last.retry_after if last and last.retry_after is not None else delay
                await asyncio.sleep(min(wait, self.cfg.backoff_max_s) * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.cfg.backoff_max_s)
            try:
                return await self._attempt(client, body)
            except _RetryableError as exc:
                last = exc
        assert last is not None
        return TeacherFailure(
            last.kind, f"{last} (gave up after {self.cfg.max_retries + 1} attempts)"
        )

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any]) -> TeacherResult:
        try:
            response = await client.post("chat/completions", json=body)
        except httpx.TimeoutException:
            raise _RetryableError("timeout", f"no answer within {self.cfg.timeout_s:g} s") from None
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
        usage = self._usage(payload.get("usage"))
        refusal = message.get("refusal")
        if refusal or choice.get("finish_reason") == "content_filter":
            return TeacherFailure(
                "refusal", "the model refused to label", usage.cost_usd, usage.tokens
            )
        content = message.get("content") or ""
        return self._parse(content, choice.get("logprobs"), usage)

    def _usage(self, usage: Any) -> _Usage:
        if not isinstance(usage, dict):
            return _Usage(0, 0.0)
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cost = (
            prompt * self.cfg.input_usd_per_mtok + completion * self.cfg.output_usd_per_mtok
        ) / 1e6
        return _Usage(prompt + completion, cost)

    def _parse(self, content: str, logprobs: Any, usage: _Usage) -> TeacherResult:
        try:
            answer = json.loads(_FENCE.sub("", content.strip()))
        except ValueError:
            return TeacherFailure("malformed", "answer is not JSON", usage.cost_usd, usage.tokens)
        if not isinstance(answer, dict) or not isinstance(answer.get("label"), str):
            return TeacherFailure(
                "malformed", "answer has no string 'label'", usage.cost_usd, usage.tokens
            )
        label = self._lookup.get(answer["label"].strip().lower())
        if label is None:
            # The label the model made up is not quoted: it could echo the text.
            return TeacherFailure(
                "unknown_label",
                "answer names a label outside the label set",
                usage.cost_usd,
                usage.tokens,
            )
        soft = _soft_from_logprobs(content, logprobs, label, self.labels) or one_hot(label)
        stated = answer.get("confidence")
        if isinstance(stated, int | float) and 0 <= stated <= 1 and math.isfinite(stated):
            confidence = float(stated)
        else:
            confidence = soft.get(label, 1.0)
        rationale = answer.get("rationale")
        return TeacherAnswer(
            label=label,
            soft_targets=normalized(soft, self.labels),
            confidence=confidence,
            rationale=str(rationale)[:500] if rationale else None,
            cost_usd=usage.cost_usd,
            tokens=usage.tokens,
        )


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


def _soft_from_logprobs(
    content: str, logprobs: Any, chosen: str, labels: Sequence[str]
) -> dict[str, float] | None:
    """A distribution over labels from the logprobs of the tokens that spell the label value.

    Walks the generated tokens of the label value. At each token, every alternative in
    ``top_logprobs`` that leads away from the chosen label is a prefix of other labels: its
    probability (times that of the chosen path so far) is shared by the labels it is a prefix
    of. The chosen label keeps the probability of its whole path. Mass on alternatives that
    spell no label is dropped by normalisation. ``None`` when logprobs are absent or do not
    line up with the content.
    """
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not tokens:
        return None
    try:
        pieces = [
            (str(t["token"]), float(t["logprob"]), t.get("top_logprobs") or []) for t in tokens
        ]
    except (KeyError, TypeError, ValueError):
        return None
    if "".join(piece for piece, _, _ in pieces) != content:
        return None
    match = _LABEL_VALUE.search(content)
    if match is None:
        return None
    value_start = match.end()
    value_end = content.find('"', value_start)
    if value_end < 0:
        return None

    def consistent(prefix: str) -> set[str]:
        if '"' in prefix:
            done = prefix[: prefix.index('"')].lower()
            return {label for label in labels if label.lower() == done}
        low = prefix.lower()
        return {label for label in labels if label.lower().startswith(low)}

    mass: dict[str, float] = {}
    path_logprob = 0.0
    offset = 0
    for piece, logprob, alternatives in pieces:
        start, end = offset, offset + len(piece)
        offset = end
        if end <= value_start:
            continue
        if start > value_end:
            break
        cut = max(0, value_start - start)
        before = content[value_start:start] if start > value_start else ""
        on_path = consistent(before + piece[cut:])
        for alt in alternatives:
            try:
                alt_token, alt_logprob = str(alt["token"]), float(alt["logprob"])
            except (KeyError, TypeError, ValueError):
                continue
            if alt_token == piece or alt_token[:cut] != piece[:cut]:
                continue
            others = consistent(before + alt_token[cut:]) - on_path
            share = math.exp(path_logprob + alt_logprob) / len(others) if others else 0.0
            for label in others:
                mass[label] = mass.get(label, 0.0) + share
        path_logprob += logprob
        if end > value_end:
            break
    mass[chosen] = mass.get(chosen, 0.0) + math.exp(path_logprob)
    return mass
