"""What the sink reads (raw Kafka records), reports (batch outcomes) and dead-letters."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as the sink needs it."""

    value: bytes
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True)
class DeadLetter:
    """What the DLQ topic receives for a record that failed validation: never its text."""

    source_topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str
    payload_sha256: str
    payload_bytes: int
    ts: str

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @property
    def key(self) -> bytes:
        return self.payload_sha256.encode()


@dataclass
class BatchOutcome:
    """What one batch did, for counters and tests."""

    consumed: int = 0
    audited: int = 0
    duplicates: int = 0
    captured: Counter[str] = field(default_factory=Counter)
    escalations: int = 0
    human_labels: int = 0
    unrecoverable: int = 0
    no_text: int = 0  # capturable by this policy, but serving sent no text
    erased: int = 0  # content of erased users skipped (replays, late escalations)
    unknown_fields: int = 0  # events with fields this version does not know (set aside)
    parked: int = 0  # escalated predictions Kafka could not give back yet (retried later)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        """Fold in the outcome of another part of the same batch."""
        for name in ("consumed", "audited", "duplicates", "escalations", "human_labels",
                     "unrecoverable", "no_text", "erased", "unknown_fields", "parked"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.captured.update(other.captured)
        self.dead_letters.extend(other.dead_letters)


class RecordFetcher(Protocol):
    """Re-reads one record of a topic from Kafka by position (for late escalations)."""

    def fetch(self, partition: int, offset: int) -> bytes | None: ...
