"""A batch of raw records to valid events: bad ones become dead letters, repeats are dropped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tutorloop.infra.hashing import fingerprint
from tutorloop.streams.batch import BatchOutcome, DeadLetter, RawRecord
from tutorloop.streams.events import E, InvalidEventError, UnknownFields


def decode_records(
    records: Sequence[RawRecord],
    decode: Callable[..., Any],
    topic: str,
    out: BatchOutcome,
    unknown: UnknownFields,
) -> list[tuple[Any, RawRecord]]:
    """The valid events of ``records`` with their records, each event id once; the invalid
    ones are appended to ``out.dead_letters`` (with a reason that holds no text)."""
    seen: set[str] = set()
    events: list[tuple[Any, RawRecord]] = []
    now = datetime.now(UTC).isoformat()
    for rec in records:
        try:
            event = decode(rec.value, unknown=unknown)
        except InvalidEventError as err:
            out.dead_letters.append(
                dead_letter(topic, rec, err.reason, err.event_id, err.payload_sha256, now)
            )
            continue
        out.unknown_fields += bool(event.model_extra)
        out.previous_version += event.upgraded_from is not None
        event_id = str(event.event_id)
        if event_id in seen:
            out.duplicates += 1
            continue
        seen.add(event_id)
        events.append((event, rec))
    return events


def dead_letter(
    topic: str,
    rec: RawRecord,
    reason: str,
    event_id: str | None,
    payload_sha256: str | None = None,
    now: str | None = None,
) -> DeadLetter:
    """The dead letter of a record: where it is, why it was refused, its hash (no text)."""
    return DeadLetter(
        source_topic=topic,
        partition=rec.partition,
        offset=rec.offset,
        event_id=event_id,
        reason=reason,
        payload_sha256=payload_sha256 or fingerprint(rec.value),
        payload_bytes=len(rec.value),
        ts=now or datetime.now(UTC).isoformat(),
    )


def read_back(raw: bytes | None, decode: Callable[[bytes], E]) -> E | None:
    """An event read back from Kafka, or None when nothing (valid) came back."""
    try:
        return decode(raw) if raw is not None else None
    except InvalidEventError:
        return None
