"""A real local HTTP server that speaks the OpenAI chat-completions protocol, for teacher tests.

It answers by keyword and misbehaves on purpose when the user text carries a marker:
``[malformed]`` (content is not JSON), ``[unknown]`` (a label outside the set), ``[refuse]``
(a refusal), ``[slow]`` (answers after ``slow_s``), ``[429]`` (one 429 with Retry-After, then
an answer), ``[500]`` (two 500s, then an answer), ``[nologprobs]`` (no logprobs). Every
request is recorded (headers and body) with the highest number in flight at once.

A request whose system prompt asks for training examples (:mod:`tutorloop.labeling.synthesis`)
gets examples built from the message: paraphrases ``"<message>, once more (<n>)"`` keep its
label; a contrast is ``"<keyword of the target> trouble: <n> <hash of the message>"`` (the
fallback's: no keyword), which the rules label as the target. Markers: ``[synth-pii]`` (a
paraphrase carries an e-mail address), ``[synth-bad]`` (invalid examples besides the valid
ones), ``[synth-junk]`` (not JSON), ``[synth-disputed]`` (a paraphrase the rules label
otherwise).

``POST /v1/embeddings`` answers with a keyword embedding: per input, the rule index of its
first matching keyword (the fallback's after the rules) as a scaled one-hot over
``embedding_dim`` dimensions plus a little deterministic per-text noise; rows are returned in
reverse order, each with its ``index``, as real servers may. ``embeddings_failures`` makes the
next that many embeddings requests answer 503; ``embeddings_status`` answers every one with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TOKEN = re.compile(r"[A-Za-z0-9]+|\s+|[^A-Za-z0-9\s]")


@dataclass
class FakeOpenAI:
    rules: list[tuple[str, str]]
    fallback: str
    # label -> {token of that label: [(alternative token, probability)]}; the chosen token's
    # probability is 1 minus the alternatives'.
    alternatives: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)
    embedding_dim: int = 16
    embeddings_failures: int = 0
    embeddings_status: int = 0
    slow_s: float = 2.0
    hold_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0
    url: str = ""
    _in_flight: int = 0
    _seen: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls_for(self, marker: str) -> int:
        return sum(1 for r in self.requests if marker in r["text"])

    def answer(self, text: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self._seen[text] += 1
            attempt = self._seen[text]
        if "[429]" in text and attempt == 1:
            return 429, {"Retry-After": "0.1"}, {"error": {"message": "rate limited"}}
        if "[500]" in text and attempt <= 2:
            return 500, {}, {"error": {"message": "overloaded"}}
        if "[slow]" in text:
            time.sleep(self.slow_s)
        if self.hold_s:
            time.sleep(self.hold_s)
        usage = {"prompt_tokens": 100 + len(text), "completion_tokens": 20}
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if "[refuse]" in text:
            message["refusal"] = "I cannot help with that."
            return 200, {}, _completion(message, None, usage)
        if "[malformed]" in text:
            message["content"] = "Sure! The label is probably card_arrival."
            return 200, {}, _completion(message, None, usage)
        label = next((lab for key, lab in self.rules if key in text.lower()), self.fallback)
        if "[unknown]" in text:
            label = "definitely_not_a_label"
        content = json.dumps({"label": label, "confidence": 0.9, "rationale": "keyword match"})
        message["content"] = content
        logprobs = None if "[nologprobs]" in text else self._logprobs(content, label)
        return 200, {}, _completion(message, logprobs, usage)

    def write_examples(self, prompt: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        fields = dict(re.findall(r"^(Message|Label): (.*)$", prompt, re.M))
        message, label = fields["Message"], fields["Label"]
        paraphrases = re.search(r"Write (\d+) paraphrase", prompt)
        contrast = re.search(r"Write (\d+) contrast\(s\) with target label: (.*)$", prompt, re.M)
        examples: list[dict[str, str]] = []
        for n in range(int(paraphrases.group(1)) if paraphrases else 0):
            text = f"{message}, once more ({n})"
            if "[synth-pii]" in message:
                text += " write to bob.canary@example.com"
            if "[synth-disputed]" in message:
                text = f"top up trouble, really ({n})"
            examples.append({"kind": "paraphrase", "text": text, "label": label})
        for n in range(int(contrast.group(1)) if contrast else 0):
            target = contrast.group(2).strip() if contrast else ""
            if target not in {lab for _, lab in self.rules} | {self.fallback}:
                target = next(lab for _, lab in self.rules if lab != label)
            keyword = next((key for key, lab in self.rules if lab == target), "something else")
            examples.append(
                {
                    "kind": "contrast",
                    "text": f"{keyword} trouble: {n} {_digest(message)}",
                    "label": target,
                }
            )
        if "[synth-bad]" in message:
            examples += [
                {"kind": "paraphrase", "text": "a label of its own", "label": "not_a_label"},
                {"kind": "paraphrase", "text": "changed its label", "label": self.fallback},
                {"kind": "paraphrase", "text": message, "label": label},
                {"kind": "summary", "text": "an unknown kind", "label": label},
                {"kind": "paraphrase", "text": "one more than asked", "label": label},
                {"kind": "paraphrase", "text": "x" * 600, "label": label},
            ]
        content = json.dumps({"examples": examples})
        if "[synth-junk]" in message:
            content = "Here are some examples: ..."
        usage = {"prompt_tokens": 200 + len(prompt), "completion_tokens": 10 * len(examples)}
        message_out = {"role": "assistant", "content": content}
        return 200, {}, _completion(message_out, None, usage)

    def embeddings(self, texts: list[str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self.embeddings_failures:
                self.embeddings_failures -= 1
                return 503, {"error": {"message": "overloaded"}}
        if self.embeddings_status:
            return self.embeddings_status, {"error": {"message": "refused"}}
        rows = []
        for index, text in enumerate(texts):
            hit = next((i for i, (key, _) in enumerate(self.rules) if key in text.lower()), None)
            vector = [0.0] * self.embedding_dim
            vector[(len(self.rules) if hit is None else hit) % self.embedding_dim] = 3.0
            noise = hashlib.sha256(text.encode()).digest()
            vector = [v + (noise[i % len(noise)] / 255 - 0.5) * 0.2 for i, v in enumerate(vector)]
            rows.append({"object": "embedding", "index": index, "embedding": vector})
        return 200, {"object": "list", "data": rows[::-1], "model": "test-embed"}

    def _logprobs(self, content: str, label: str) -> dict[str, Any]:
        alts = self.alternatives.get(label, {})
        out = []
        for token in _TOKEN.findall(content):
            options = alts.get(token, [])
            chosen = 1.0 - sum(p for _, p in options)
            top = [{"token": token, "logprob": math.log(chosen)}]
            top += [{"token": t, "logprob": math.log(p)} for t, p in options]
            out.append({"token": token, "logprob": math.log(chosen), "top_logprobs": top})
        return {"content": out}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _completion(message: dict[str, Any], logprobs: Any, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}
        ],
        "usage": {**usage, "total_tokens": sum(usage.values())},
    }


@contextmanager
def serve(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/v1/embeddings":
                with fake._lock:
                    fake.requests.append({"headers": dict(self.headers), "body": body,
                                          "text": "\n".join(body["input"])})  # fmt: skip
                self._send(*fake.embeddings(list(body["input"])))
                return
            text = body["messages"][-1]["content"]
            with fake._lock:
                fake.requests.append({"headers": dict(self.headers), "body": body, "text": text})
                fake._in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
            headers: dict[str, str]
            try:
                if self.path != "/v1/chat/completions":
                    status, headers, payload = 404, {}, {"error": {"message": "no such route"}}
                elif "training examples" in body["messages"][0]["content"]:
                    status, headers, payload = fake.write_examples(text)
                else:
                    status, headers, payload = fake.answer(text)
                self._send(status, payload, headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)
            finally:
                with fake._lock:
                    fake._in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
