"""What the sink reads (raw Kafka records), reports (batch outcomes) and dead-letters."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

#: An open letter waits for a fix; a replayed one was stored by a later replay; an expired
#: one's source record is past the topic's retention (it can no longer be replayed).
LetterStatus = Literal["open", "replayed", "expired"]


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as the sink needs it."""

    value: bytes
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True)
class DeadLetter:
    """What the DLQ topic receives for a record the sink could not store: never its text.

    It points at the source record (topic, partition, offset), which a replay re-reads while
    it is within retention. Keyed by that position, so a batch written twice (a redelivery)
    yields the same letter twice under one key, and the latest letter of a key is its state.
    """

    source_topic: str
    partition: int
    offset: int
    event_id: str | None
    reason: str
    payload_sha256: str
    payload_bytes: int
    ts: str
    status: LetterStatus = "open"
    resolved_ts: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @property
    def key(self) -> bytes:
        return f"{self.source_topic}/{self.partition}/{self.offset}".encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeadLetter:
        """A letter read back from the DLQ topic (fields a newer version added are ignored)."""
        data: dict[str, Any] = json.loads(raw)
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


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
    previous_version: int = 0  # events in the previous contract version (read, upgraded)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        """Fold in the outcome of another part of the same batch."""
        for f in fields(self):
            if f.type == "int":  # the counters (annotations are strings here)
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.captured.update(other.captured)
        self.dead_letters.extend(other.dead_letters)


class RecordFetcher(Protocol):
    """Re-reads one record of a topic from Kafka by position (for late escalations)."""

    def fetch(self, partition: int, offset: int) -> bytes | None: ...
