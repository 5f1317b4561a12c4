"""The teacher protocol: scrubbed texts and a label set in, one answer (or one error) per text out.

A teacher never sees raw text: the relabel job sends only ``cases.text``, which the stream
workers scrubbed before it reached the warehouse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

ErrorKind = Literal["malformed", "unknown_label", "refusal", "timeout", "http", "other"]


@dataclass(frozen=True)
class TeacherAnswer:
    """A teacher's label for one text: a distribution over the label set and its argmax."""

    label: str
    soft_targets: dict[str, float]
    confidence: float
    rationale: str | None = None
    cost_usd: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class TeacherFailure:
    """Why one text got no label. The message never quotes the text."""

    kind: ErrorKind
    message: str
    cost_usd: float = 0.0
    tokens: int = 0


TeacherResult = TeacherAnswer | TeacherFailure


@dataclass(frozen=True)
class TeacherInfo:
    """Who answered: ``teacher_id`` keys the cache, ``version`` is recorded with each label."""

    teacher_id: str
    version: str
    labels: tuple[str, ...] = field(default_factory=tuple)


class Teacher(Protocol):
    @property
    def info(self) -> TeacherInfo: ...

    def label_batch(self, texts: Sequence[str]) -> list[TeacherResult]:
        """One result per text, in order. Failures are results, not exceptions."""
        ...


def normalized(soft: dict[str, float], labels: Sequence[str]) -> dict[str, float]:
    """``soft`` restricted to ``labels``, non-negative, summing to 1, rounded for storage."""
    clean = {label: max(0.0, float(soft.get(label, 0.0))) for label in labels}
    total = sum(clean.values())
    if not math.isfinite(total) or total <= 0:
        raise ValueError("soft targets put no mass on any known label")
    return {label: round(p / total, 6) for label, p in clean.items() if p > 0}


def one_hot(label: str) -> dict[str, float]:
    return {label: 1.0}
