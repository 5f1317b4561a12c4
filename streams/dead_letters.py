"""Dead letters read back and replayed once the bug that caused them is fixed.

A letter points at its source record; it never holds the record. Replaying re-reads the
record from its topic (while within retention), checks it is the same bytes (the letter's
sha256), and writes it through the current sink with the same poison isolation the worker
uses. The outcome is written back to the DLQ under the letter's key (its source position):
``replayed`` when the record is now stored, ``open`` with the new reason when it still fails,
``expired`` when the record is gone. Readers take the latest letter of each key, so replaying
twice, or a worker dead-lettering the same batch twice, never counts a record twice; and the
sink is idempotent, so a record replayed twice is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tutorloop.infra.hashing import fingerprint
from tutorloop.infra.topics import read_to_end
from tutorloop.streams.batch import BatchOutcome, DeadLetter, LetterStatus, RawRecord, RecordFetcher
from tutorloop.streams.isolation import Isolator, Write


class DeadLetterError(ValueError):
    """A dead-letter command was given something it cannot use; the message says what."""


def read_letters(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[DeadLetter]:
    """The latest letter of every key on the DLQ topic, oldest first. Values that are not
    letters (another producer's) are skipped."""
    latest: dict[bytes, DeadLetter] = {}
    for record in read_to_end(bootstrap, topic, timeout_s=timeout_s):
        letter = _letter_or_none(record.value)
        if letter is not None:
            latest.pop(letter.key, None)  # re-inserted: ordered by latest write
            latest[letter.key] = letter
    return list(latest.values())


def _letter_or_none(raw: bytes | None) -> DeadLetter | None:
    if raw is None:
        return None
    try:
        return DeadLetter.from_bytes(raw)
    except (ValueError, TypeError):
        return None


def select(
    letters: Iterable[DeadLetter],
    *,
    status: LetterStatus | None = "open",
    reason: str | None = None,
    since: datetime | None = None,
) -> list[DeadLetter]:
    """Letters with this status (None: any), whose reason contains ``reason`` (any case),
    first dead-lettered at or after ``since``."""
    wanted = reason.lower() if reason else None
    return [
        letter
        for letter in letters
        if (status is None or letter.status == status)
        and (wanted is None or wanted in letter.reason.lower())
        and (since is None or _when(letter.ts) >= since)
    ]


def _when(ts: str) -> datetime:
    moment = datetime.fromisoformat(ts)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 date or time (UTC when it has no zone), or a duration back
    from now such as ``90m``, ``24h`` or ``7d`` (as ``privacy purge --older-than`` reads it)."""
    from tutorloop.privacy.erasure import RetentionError, parse_duration

    try:
        return (now or datetime.now(UTC)) - parse_duration(value)
    except RetentionError:
        pass
    try:
        return _when(value.strip())
    except ValueError:
        raise DeadLetterError(
            f"--since {value!r} is neither an ISO date/time nor a duration like 24h or 7d"
        ) from None


@dataclass
class ReplayReport:
    """What one replay did."""

    replayed: int = 0  # stored by the current code
    still_failing: int = 0  # dead-lettered again, with the current reason
    expired: int = 0  # the source record is past retention, or another record took its place
    unreadable: int = 0  # not read back now, but still within retention: left open
    outcome: BatchOutcome = field(default_factory=BatchOutcome)


def replay(
    letters: Iterable[DeadLetter],
    writers: Mapping[str, Write],
    fetchers: Mapping[str, RecordFetcher],
    publish: Callable[[DeadLetter], None],
    *,
    retention: timedelta,
    now: datetime | None = None,
) -> ReplayReport:
    """Run the source records of ``letters`` through ``writers`` (by source topic) again and
    publish each letter's new state. Letters of a topic without a writer are left alone."""
    now = now or datetime.now(UTC)
    report = ReplayReport()
    by_topic: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        if letter.source_topic in writers:
            by_topic.setdefault(letter.source_topic, []).append(letter)
    for topic, topic_letters in by_topic.items():
        records: list[RawRecord] = []
        pending: dict[bytes, DeadLetter] = {}
        for letter in topic_letters:
            raw = fetchers[topic].fetch(letter.partition, letter.offset)
            if raw is not None and fingerprint(raw) == letter.payload_sha256:
                records.append(RawRecord(raw, letter.partition, letter.offset))
                pending[letter.key] = letter
            elif raw is not None or _when(letter.ts) + retention < now:
                report.expired += 1
                publish(_resolved(letter, "expired", now))
            else:
                report.unreadable += 1  # a broker hiccup, or compaction: try again later
        if not records:
            continue
        outcome = Isolator(topic).write(writers[topic], records)
        report.outcome.add(outcome)
        for again in outcome.dead_letters:
            report.still_failing += 1
            first = pending.pop(again.key, None)
            # The new reason, the first failure's time: retention counts from the record.
            publish(replace(again, ts=first.ts) if first else again)
        for letter in pending.values():
            report.replayed += 1
            publish(_resolved(letter, "replayed", now))
    return report


def _resolved(letter: DeadLetter, status: LetterStatus, now: datetime) -> DeadLetter:
    return replace(letter, status=status, resolved_ts=now.isoformat())
