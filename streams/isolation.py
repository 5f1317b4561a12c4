"""Poison-record isolation: a record that makes the sink fail on its own is dead-lettered.

A *valid* event can still break the sink (a scrubber bug on odd Unicode, a constraint or an
encoding error). Retrying its batch forever, or restarting the worker from the same offsets,
would stall its partition for good. So a failing batch is bisected: halves are written on
their own, down to single records; records that fail alone become dead letters (the exception
class and a scrubbed first line of its message, never the record's text) and the rest is
committed.

Failures of the whole system look the same from inside a batch (a broken warehouse file fails
every record), and must not empty the topic into the DLQ. They are told apart by
:class:`Isolator`'s memory across batches: when ``max_lonely_failures`` single records in a row
have failed with no write succeeding in between, the failure is systemic and
:class:`SystemicSinkError` is raised instead (the worker then exits for its supervisor, without
committing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from tutorloop.infra.hashing import fingerprint
from tutorloop.infra.warehouse import WarehouseBusyError
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.streams.batch import BatchOutcome, DeadLetter, RawRecord

Write = Callable[[Sequence[RawRecord]], BatchOutcome]
_MESSAGE_CHARS = 200


class SystemicSinkError(RuntimeError):
    """Every part of the batch fails on its own: not a poison record, the sink is broken."""


@dataclass
class Isolator:
    """Bisects failing batches of one agent; remembers lonely failures across batches."""

    source_topic: str
    max_lonely_failures: int = 8
    _lonely_in_a_row: int = field(default=0, init=False)

    def write(self, write: Write, records: Sequence[RawRecord]) -> BatchOutcome:
        """Write ``records``; those that fail alone come back as dead letters in the outcome.

        Raises :class:`WarehouseBusyError` (transient: retry the batch) and
        :class:`SystemicSinkError`.
        """
        outcome, poison = self._bisect(write, list(records))
        outcome.consumed += len(poison)
        for record, exc in poison:
            outcome.dead_letters.append(self._letter(record, exc))
        return outcome

    def _bisect(
        self, write: Write, records: list[RawRecord]
    ) -> tuple[BatchOutcome, list[tuple[RawRecord, Exception]]]:
        try:
            outcome = write(records)
        except WarehouseBusyError:
            raise
        except Exception as exc:
            if len(records) == 1:
                try:  # once more alone, so that a passing fault does not make a dead letter
                    outcome = write(records)
                except WarehouseBusyError:
                    raise
                except Exception:
                    pass
                else:
                    self._lonely_in_a_row = 0
                    return outcome, []
                self._lonely_in_a_row += 1
                if self._lonely_in_a_row >= self.max_lonely_failures:
                    raise SystemicSinkError(
                        f"{self._lonely_in_a_row} records in a row failed on their own "
                        f"({_describe(exc)})"
                    ) from exc
                return BatchOutcome(), [(records[0], exc)]
            middle = len(records) // 2
            outcome, poison = self._bisect(write, records[:middle])
            rest, more = self._bisect(write, records[middle:])
            outcome.add(rest)
            return outcome, poison + more
        self._lonely_in_a_row = 0
        return outcome, []

    def _letter(self, record: RawRecord, exc: Exception) -> DeadLetter:
        return DeadLetter(
            source_topic=self.source_topic,
            partition=record.partition,
            offset=record.offset,
            event_id=_event_id(record.value),
            reason=f"sink failed on this record alone: {_describe(exc, record.value)}",
            payload_sha256=fingerprint(record.value),
            payload_bytes=len(record.value),
            ts=datetime.now(UTC).isoformat(),
        )


def _describe(exc: BaseException, record: bytes = b"") -> str:
    """The exception class and its first line, scrubbed and cut; withheld when it quotes any
    word of the record (a message may carry the text that broke the sink)."""
    lines = str(exc).splitlines()
    first = RegexScrubber().scrub(lines[0][:_MESSAGE_CHARS]).text if lines else ""
    quoted = record.decode("utf-8", "replace").lower()
    if any(word.lower() in quoted for word in re.findall(r"[^\W\d_]{4,}", first)):
        first = "(message withheld: it quotes the record)"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _event_id(value: bytes) -> str | None:
    try:
        return str(UUID(str(json.loads(value).get("event_id"))))
    except (ValueError, TypeError, AttributeError):
        return None
