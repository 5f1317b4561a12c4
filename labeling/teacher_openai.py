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
import math
import re
from collections.abc import Sequence
from typing import Any

from tutorloop.infra.hashing import fingerprint
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.openai_chat import ChatReply, chat_client, complete, json_answer
from tutorloop.labeling.teacher import (
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
        limit = asyncio.Semaphore(self.cfg.concurrency)
        async with chat_client(self.cfg) as client:

            async def one(text: str) -> TeacherResult:
                async with limit:
                    reply = await complete(client, self.cfg, self._body(text))
                if isinstance(reply, TeacherFailure):
                    return reply
                return self._parse(reply)

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

    def _parse(self, reply: ChatReply) -> TeacherResult:
        content = reply.content
        try:
            answer = json_answer(content)
        except ValueError:
            return TeacherFailure("malformed", "answer is not JSON", reply.cost_usd, reply.tokens)
        if not isinstance(answer, dict) or not isinstance(answer.get("label"), str):
            return TeacherFailure(
                "malformed", "answer has no string 'label'", reply.cost_usd, reply.tokens
            )
        label = self._lookup.get(answer["label"].strip().lower())
        if label is None:
            # The label the model made up is not quoted: it could echo the text.
            return TeacherFailure(
                "unknown_label",
                "answer names a label outside the label set",
                reply.cost_usd,
                reply.tokens,
            )
        soft = _soft_from_logprobs(content, reply.logprobs, label, self.labels) or one_hot(label)
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
            cost_usd=reply.cost_usd,
            tokens=reply.tokens,
        )


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
