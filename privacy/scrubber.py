"""PII scrubbing: replace what identifies a person with typed placeholders.

The stream workers call a :class:`Scrubber` before anything reaches the warehouse. Findings
are counts per entity type plus the scrubber's policy version — never the matched values.

:class:`RegexScrubber` is the fast pass for structured identifiers (emails, cards with a Luhn
check, IBANs with mod-97, SSNs, phone numbers, IP addresses, URLs). It is the default until the
Presidio-based scrubber (names, addresses, organisations) is configured, and that scrubber runs
it too.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tutorloop.infra.hashing import fingerprint


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and what was removed from it (counts per type, no values)."""

    text: str
    findings: dict[str, int] = field(default_factory=dict)
    policy_version: str = ""


class Scrubber(Protocol):
    """Anything that scrubs texts in batches."""

    @property
    def policy_version(self) -> str: ...

    def scrub_batch(self, texts: Sequence[str]) -> list[ScrubResult]: ...

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        """``(start, end, entity)`` of everything found, per text."""
        ...


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = re.sub(r"[\s-]", "", candidate).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _ip_ok(candidate: str) -> bool:
    return all(0 <= int(part) <= 255 for part in candidate.split("."))


def _ipv6_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _licence_ok(candidate: str) -> bool:
    """At least five letters or digits, and a digit in the first part (not "is 99") unless
    that part is a lone letter, as in Michigan's "A 123 456 789 012"."""
    parts = candidate.split()
    first_ok = any(c.isdigit() for c in parts[0]) or (
        len(parts[0]) == 1 and parts[0].isalpha() and len(parts) > 1 and parts[1].isdigit()
    )
    return sum(c.isalnum() for c in candidate) >= 5 and first_ok


_DATE_LIKE = re.compile(r"\d{1,2}([/.-])\d{1,2}\1\d{2,4}|\d{4}([/.-])\d{1,2}\2\d{1,2}")


def _phone_ok(candidate: str) -> bool:
    number: str = re.split(r"x|ext", candidate, maxsplit=1, flags=re.IGNORECASE)[0]
    digits = sum(c.isdigit() for c in number)
    # "12/03/1985" has eight digits too: a date is not a phone number.
    return 7 <= digits <= 15 and not _DATE_LIKE.fullmatch(number.strip())


@dataclass(frozen=True)
class _Rule:
    entity: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    group: int = 0  # the part of the match that is the identifier
    trim_groups: int = 0  # on a failed check, retry without up to this many trailing groups


# Order matters: earlier rules claim their spans first (an IBAN's digits are not a phone).
_RULES: tuple[_Rule, ...] = (
    _Rule("EMAIL_ADDRESS", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")),
    _Rule("URL", re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)),
    _Rule(
        "IBAN_CODE",
        # Case-insensitive: people type IBANs in lower case, and mod-97 does not mind.
        re.compile(
            r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?\b", re.IGNORECASE
        ),
        _iban_ok,
        trim_groups=2,
    ),
    _Rule("CREDIT_CARD", re.compile(r"\b\d(?:[ -]?\d){11,18}\b"), _luhn_ok),
    _Rule("US_SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}\b")),
    # A licence number after its cue, in any state's format (letters, digits, dashes); the
    # UK's 16-character licence number is distinctive enough to need no cue.
    _Rule(
        "US_DRIVER_LICENSE",
        re.compile(
            r"(?i:\b(?:driver'?s?|driving)\s+licen[cs]e|\bDL\b|\blicen[cs]e)"
            r"(?i:\s*(?:number|no\.?|num|#|id))?(?i:\s*(?:is|was|:|-))?\s*"
            r"((?=[A-Za-z0-9 -]*\d)[A-Za-z0-9](?:[A-Za-z0-9]|[- ](?=[A-Za-z0-9]*\d)){4,22})"
        ),
        _licence_ok,
        group=1,
    ),
    _Rule("US_DRIVER_LICENSE", re.compile(r"\b[A-Z9]{5}\d{6}[A-Z9]{2}\d[A-Z]{2}\d{0,2}\b")),
    _Rule(
        "IP_ADDRESS",
        re.compile(
            r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
            r"(?![\w:])"
        ),
        _ipv6_ok,
    ),
    _Rule(
        "IP_ADDRESS",
        re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
        _ip_ok,
    ),
    _Rule(
        "PHONE_NUMBER",
        re.compile(
            # international: +CC, an optional trunk "(0)", then groups (the first may be 1 digit)
            r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,5}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,5}"
            # national: optional area code in parentheses, then groups of digits; a slash may
            # close the area code, as in German, Austrian or Hungarian notation ("0221/123456")
            r"|(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:(?:[\s.-]|/\s?)?\d{1,5}){1,5})"
            r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?!\w)"
        ),
        _phone_ok,
    ),
)

_REGEX_POLICY = fingerprint("|".join(f"{r.entity}:{r.pattern.pattern}" for r in _RULES), length=10)


def find_spans(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, entity)`` spans the regex rules find, in text order."""
    taken: list[tuple[int, int, str]] = []
    for rule in _RULES:
        for match in rule.pattern.finditer(text):
            start, matched_end = match.span(rule.group)
            end = (
                matched_end
                if rule.check is None
                else _checked_end(text, start, matched_end, rule.check, rule.trim_groups)
            )
            if end is None:
                continue
            if any(start < t_end and t_start < end for t_start, t_end, _ in taken):
                continue
            taken.append((start, end, rule.entity))
    taken.sort()
    return taken


def _checked_end(
    text: str, start: int, end: int, check: Callable[[str], bool], trim_groups: int
) -> int | None:
    """Where the candidate passes its check, trimming trailing groups if allowed: a pattern may
    swallow the word after an identifier ("DE89 ... 00 is"), which fails the checksum."""
    for _ in range(trim_groups + 1):
        if check(text[start:end]):
            return end
        cut = max(text.rfind(" ", start, end), text.rfind("-", start, end))
        if cut <= start:
            return None
        end = cut
    return None


def replace_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> ScrubResult:
    """Replace each span with ``<ENTITY>``; count findings per entity type."""
    out: list[str] = []
    cursor = 0
    counts: Counter[str] = Counter()
    for start, end, entity in spans:
        out.append(text[cursor:start])
        out.append(f"<{entity}>")
        counts[entity] += 1
        cursor = end
    out.append(text[cursor:])
    return ScrubResult(text="".join(out), findings=dict(counts))


class RegexScrubber:
    """Structured identifiers only; about ten thousand short texts per second on one core."""

    @property
    def policy_version(self) -> str:
        return f"regex-{_REGEX_POLICY}"

    def scrub(self, text: str) -> ScrubResult:
        result = replace_spans(text, find_spans(text))
        return ScrubResult(result.text, result.findings, self.policy_version)

    def scrub_batch(self, texts: Sequence[str]) -> list[ScrubResult]:
        return [self.scrub(t) for t in texts]

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        """``(start, end, entity)`` of everything found, per text (for evaluation)."""
        return [find_spans(t) for t in texts]
