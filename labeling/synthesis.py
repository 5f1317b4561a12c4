"""Paraphrases and contrast edits an LLM teacher writes from captured cases (``teacher.synthesis``).

Sources are the captured cases the teacher labeled least surely (at most
``max_source_confidence``; never imported data, never a case with a human label, never one
without training consent), least sure first. For each, the endpoint is shown the case's
**scrubbed** text (``cases.text``; raw text never reaches the warehouse, so it cannot reach a
prompt) with its teacher label, and asked for ``paraphrases`` rewrites with the same label and
``contrasts`` minimal edits that flip the label to the teacher's runner-up (a boundary case
between the two labels the teacher hesitated over), or to the nearest label of the model's
choosing when the teacher gave no runner-up.

What comes back is checked (a known label; a paraphrase keeps the source's label, a contrast
leaves it; not the source's text again, not a repeat; at most 500 characters) and scrubbed
again before it is stored (a model can write a name or a number that looks like one). Each
example becomes a ``cases`` row with reason ``synthetic`` that inherits the source's user,
tenant, consent and timestamps, so that contribution caps, DP accounting, erasure and
retention treat it as that user's data; ``synthetic_cases`` records its source, kind, intended
label, generator and prompt hash. A source gives at most ``max_per_source`` synthetic cases
over all time and is asked once per generator (again only after a timeout or an HTTP error;
an unusable answer or a refusal is booked in ``teacher_errors`` and not asked again). The
regular relabel job then labels the new cases like any captured case; dataset assembly
(:mod:`tutorloop.trainer.dataset`) keeps a
synthetic case only for training, only while its source is a training row, and only where the
teacher's label agrees with the intended one.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from tutorloop.infra.hashing import case_text_hash, fingerprint
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings, SynthesisSettings
from tutorloop.infra.tables import IMPORTED_REASONS, CaptureReason, SyntheticKind
from tutorloop.infra.warehouse import Warehouse, insert_arrow
from tutorloop.labeling.case_store import insert_cases
from tutorloop.labeling.openai_chat import ChatReply, chat_client, complete, json_answer
from tutorloop.labeling.relabel import failure_row, insert_failures, pending_cases, relabel
from tutorloop.labeling.teacher import Teacher, TeacherFailure
from tutorloop.labeling.teachers import label_set
from tutorloop.privacy.scrubber import Scrubber, ScrubResult
from tutorloop.privacy.scrubbing import configured_scrubber

PROMPT_VERSION = 1
MAX_CHARS = 500

_SYSTEM = """You write training examples for a classifier of customer messages.
Its labels:
{labels}

You get one message and its label. Write the examples asked for:
- a paraphrase says the same thing in other words: its label stays the message's label;
- a contrast changes as few words as possible so that the message's label becomes the target.
Keep placeholders such as <PERSON> or <EMAIL_ADDRESS> as they are. Never add names, numbers,
addresses or other personal details.
Answer with one JSON object and nothing else:
{{"examples": [{{"kind": "paraphrase" or "contrast", "text": "<the new message>", \
"label": "<its label, spelled exactly as in the list>"}}]}}"""

_SYNTHETIC_SCHEMA = pa.schema(
    [("case_id", pa.string()), ("source_case_id", pa.string()), ("kind", pa.string()),
     ("intended_label", pa.string()), ("generator_id", pa.string()),
     ("prompt_hash", pa.string()), ("cost_usd", pa.float64()), ("tokens", pa.int64())]
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """A captured case to write from: its scrubbed text, teacher label and runner-up."""

    case_id: str
    text: str
    label: str
    runner_up: str | None
    paraphrases: int
    contrasts: int


@dataclass(frozen=True)
class Example:
    kind: SyntheticKind
    text: str
    label: str


@dataclass
class SynthesisReport:
    generator_id: str
    sources: int = 0
    written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    failed_calls: int = 0
    cost_usd: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SyntheticWriter:
    """Asks an OpenAI-compatible endpoint for paraphrases and contrast edits of sources."""

    def __init__(
        self, cfg: OpenAITeacherSettings, synthesis: SynthesisSettings, labels: Sequence[str]
    ) -> None:
        if len(labels) < 2:
            raise ValueError("synthetic cases need a label set with at least two labels")
        self.cfg, self.synthesis = cfg, synthesis
        self.labels = tuple(labels)
        self._lookup = {label.lower(): label for label in self.labels}
        self._system = _SYSTEM.format(labels="\n".join(f"- {label}" for label in self.labels))
        self.prompt_hash = fingerprint(str(PROMPT_VERSION), self._system, length=12)
        self.generator_id = f"openai:{cfg.model}:synth:{self.prompt_hash}"

    def write(self, sources: Sequence[Source]) -> list[ChatReply | TeacherFailure]:
        """Per source, the endpoint's answer (or why the call failed)."""
        return asyncio.run(self._write_all(sources))

    async def _write_all(self, sources: Sequence[Source]) -> list[ChatReply | TeacherFailure]:
        limit = asyncio.Semaphore(self.cfg.concurrency)
        async with chat_client(self.cfg) as client:

            async def one(source: Source) -> ChatReply | TeacherFailure:
                async with limit:
                    return await complete(client, self.cfg, self._body(source))

            return list(await asyncio.gather(*(one(source) for source in sources)))

    def _body(self, source: Source) -> dict[str, Any]:
        target = source.runner_up or "the other label closest to this message (you choose)"
        ask = [f"Message: {source.text}", f"Label: {source.label}"]
        if source.paraphrases:
            ask.append(f"Write {source.paraphrases} paraphrase(s).")
        if source.contrasts:
            ask.append(f"Write {source.contrasts} contrast(s) with target label: {target}")
        return {
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": self._system},
                {"role": "user", "content": "\n".join(ask)},
            ],
            "temperature": self.synthesis.temperature,
            "max_tokens": 200 * (source.paraphrases + source.contrasts) + 50,
            "response_format": {"type": "json_object"},
        }

    def examples(self, source: Source, content: str, rejected: Counter[str]) -> list[Example]:
        """The answer's valid examples, at most as many of each kind as were asked for."""
        try:
            answer = json_answer(content)
            items = answer["examples"]
            if not isinstance(items, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            rejected["malformed_answer"] += 1
            return []
        wanted = {SyntheticKind.PARAPHRASE: source.paraphrases,
                  SyntheticKind.CONTRAST: source.contrasts}  # fmt: skip
        seen = {case_text_hash(source.text)}
        out: list[Example] = []
        for item in items:
            reason = self._invalid(item, source, seen)
            if reason:
                rejected[reason] += 1
                continue
            kind = SyntheticKind(item["kind"])
            if wanted[kind] == 0:
                rejected["more_than_asked"] += 1
                continue
            wanted[kind] -= 1
            seen.add(case_text_hash(item["text"]))
            label = self._known_label(item["label"])
            assert label is not None  # checked by _invalid
            out.append(Example(kind, item["text"].strip(), label))
        return out

    def _known_label(self, name: str) -> str | None:
        return self._lookup.get(name.strip().lower())

    def _invalid(self, item: Any, source: Source, seen: set[str]) -> str | None:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) for key in ("kind", "text", "label")
        ):
            return "malformed_example"
        if item["kind"] not in tuple(SyntheticKind):
            return "unknown_kind"
        label = self._known_label(item["label"])
        if label is None:
            return "unknown_label"
        text = item["text"].strip()
        if not text or len(text) > MAX_CHARS:
            return "empty_or_too_long"
        if case_text_hash(text) in seen:
            return "repeat"
        same = label == source.label
        if item["kind"] == SyntheticKind.PARAPHRASE and not same:
            return "paraphrase_changed_label"
        if item["kind"] == SyntheticKind.CONTRAST and same:
            return "contrast_kept_label"
        return None


def sources(
    warehouse: Warehouse, teacher_id: str, synthesis: SynthesisSettings, generator_id: str
) -> list[Source]:
    """The cases to write from this time, least sure first (see the module docstring)."""
    rows = warehouse.query(
        "SELECT c.case_id, c.text, l.label, l.soft_targets,"
        " (SELECT count(*) FROM synthetic_cases s WHERE s.source_case_id = c.case_id)"
        " FROM cases c JOIN labels l ON l.case_id = c.case_id"
        " AND l.source = 'teacher' AND l.teacher_id = ?"
        " WHERE c.capture_reason NOT IN (SELECT unnest(?::VARCHAR[])) AND c.consent_training"
        " AND l.confidence <= ?"
        " AND NOT EXISTS (SELECT 1 FROM labels h WHERE h.case_id = c.case_id"
        " AND h.source = 'human')"
        " AND NOT EXISTS (SELECT 1 FROM synthetic_cases s WHERE s.source_case_id = c.case_id"
        " AND s.generator_id = ?)"
        " AND NOT EXISTS (SELECT 1 FROM teacher_errors e WHERE e.case_id = c.case_id"
        " AND e.teacher_id = ? AND e.kind IN ('malformed', 'refusal'))"
        " ORDER BY l.confidence, c.case_id",
        [teacher_id, [*IMPORTED_REASONS, CaptureReason.SYNTHETIC],
         synthesis.max_source_confidence, generator_id, generator_id],
    )  # fmt: skip
    out: list[Source] = []
    for case_id, text, label, soft, given in rows:
        room = synthesis.max_per_source - int(given)
        paraphrases = min(synthesis.paraphrases, room)
        contrasts = min(synthesis.contrasts, room - paraphrases)
        if paraphrases + contrasts == 0:
            continue
        ranked = sorted(json.loads(soft).items(), key=lambda kv: -kv[1])
        runner_up = next((lab for lab, p in ranked if lab != label and p > 0), None)
        out.append(Source(case_id, text, label, runner_up, paraphrases, contrasts))
        if len(out) == synthesis.max_sources:
            break
    return out


def synthesize(
    warehouse: Warehouse, writer: SyntheticWriter, scrubber: Scrubber, teacher_id: str
) -> SynthesisReport:
    """Write this cycle's synthetic cases into the warehouse (one transaction)."""
    report = SynthesisReport(writer.generator_id)
    chosen = sources(warehouse, teacher_id, writer.synthesis, writer.generator_id)
    report.sources = len(chosen)
    if not chosen:
        return report
    rejected: Counter[str] = Counter()
    written: list[tuple[Source, Example, ChatReply, bool]] = []
    errors: list[dict[str, Any]] = []
    for source, reply in zip(chosen, writer.write(chosen), strict=True):
        report.cost_usd += reply.cost_usd
        report.tokens += reply.tokens
        if isinstance(reply, TeacherFailure):
            report.failed_calls += 1
            errors.append(failure_row(source.case_id, writer.generator_id, reply,
                                      reply.cost_usd, reply.tokens))  # fmt: skip
            continue
        examples = writer.examples(source, reply.content, rejected)
        if not examples:  # paid for and unusable: booked where failures are
            unusable = TeacherFailure("malformed", "no usable example in the answer")
            errors.append(failure_row(source.case_id, writer.generator_id, unusable,
                                      reply.cost_usd, reply.tokens))  # fmt: skip
        written += [(source, example, reply, i == 0) for i, example in enumerate(examples)]
    report.rejected = dict(rejected)
    scrubbed = scrubber.scrub_batch([example.text for _, example, _, _ in written])
    with warehouse.transaction() as con:
        originals = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT case_id, ts, tenant_id, user_id, consent_training, captured_at"
                " FROM cases WHERE case_id IN (SELECT unnest(?::VARCHAR[]))",
                [[s.case_id for s in chosen]],
            ).fetchall()
        }
        cases, lineage = [], []
        for (source, example, reply, pays), clean in zip(written, scrubbed, strict=True):
            if source.case_id in originals:  # else erased while the endpoint was writing
                case, link = _rows(source, example, clean, originals[source.case_id], writer)
                link.update(cost_usd=reply.cost_usd * pays, tokens=reply.tokens * pays)
                cases.append(case)
                lineage.append(link)
        report.written = insert_cases(con, cases, typed=False)
        insert_arrow(con, "synthetic_cases", pa.Table.from_pylist(lineage, _SYNTHETIC_SCHEMA))
        insert_failures(con, errors)
    report.by_kind = dict(Counter(str(row["kind"]) for row in lineage))
    return report


def _rows(
    source: Source,
    example: Example,
    clean: ScrubResult,
    original: tuple[Any, ...],
    writer: SyntheticWriter,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``cases`` row (the source's user, tenant, consent and times) and its lineage row."""
    ts, tenant, user, consent, captured_at = original
    case_id = "synth-" + fingerprint(
        source.case_id, writer.generator_id, example.kind, clean.text, length=24
    )
    case = {
        "case_id": case_id, "request_id": case_id, "prediction_event_id": None, "ts": ts,
        "tenant_id": tenant, "user_id": user, "model_version": None, "text": clean.text,
        "text_hash": case_text_hash(clean.text), "predicted_label": None, "confidence": None,
        "capture_reason": CaptureReason.SYNTHETIC, "consent_training": consent,
        "scrub_findings": json.dumps(clean.findings, sort_keys=True),
        "scrub_policy_version": clean.policy_version, "captured_at": captured_at,
    }  # fmt: skip
    link = {
        "case_id": case_id, "source_case_id": source.case_id, "kind": example.kind,
        "intended_label": example.label, "generator_id": writer.generator_id,
        "prompt_hash": writer.prompt_hash,
    }  # fmt: skip
    return case, link


def write_and_label(
    settings: Settings,
    warehouse: Warehouse,
    teacher: Teacher,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write synthetic cases from what ``teacher`` labeled (``teacher.synthesis``, at the
    endpoint of ``teacher.openai``), then have ``teacher`` label them."""
    teacher_id = teacher.info.teacher_id
    writer = SyntheticWriter(
        settings.teacher.openai, settings.teacher.synthesis, label_set(settings, warehouse)
    )
    written = synthesize(warehouse, writer, configured_scrubber(settings.privacy), teacher_id)
    synthetic = [
        case
        for case in pending_cases(warehouse, teacher_id)
        if case.capture_reason == CaptureReason.SYNTHETIC
    ]
    labeled = relabel(
        warehouse, teacher, batch_size=settings.teacher.batch_size, cases=synthetic,
        on_batch=on_batch,
    )  # fmt: skip
    return {**written.to_dict(), "relabel": labeled.to_dict()}
