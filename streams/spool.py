"""A bounded on-disk queue between serving and the broker, and the emitter that uses it.

:class:`SpoolingEmitter` writes every event to the spool (an append to a segment file: tens of
microseconds, no network) and returns; a sender thread hands spooled events to Kafka in order
and advances the spool's cursor only after the broker acknowledged them. While the broker is
unreachable the spool grows (``streams.emit_spool_bytes`` at most; beyond it new events are
dropped and counted) and serving carries on; when the broker returns the backlog goes out in
order. Events still spooled when the process stops are sent by the next start. Delivery is
at-least-once (a batch retried after a timeout may arrive twice): the sink is idempotent on
``event_id``.

The spool holds what Kafka would: text only for events the capture policy keeps from users who
consented. Segments are deleted as soon as everything in them was delivered. Appends are not
fsynced: a process crash loses nothing (the page cache survives it), a power cut may lose the
last events.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">IHI")  # record length, topic length, key length
_SEGMENT_BYTES = 16 * 1024 * 1024
Record = tuple[str, bytes | None, bytes]  # topic, key, value
Position = tuple[int, int]  # segment number, byte offset


class DiskSpool:
    """Segment files ``<n>.seg`` of length-prefixed records and a ``cursor`` file."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cursor: Position = self._read_cursor()
        segments = self._segments()
        self._write_no = max([self._cursor[0], *segments], default=1)
        self._writer = (folder / f"{self._write_no:012d}.seg").open("ab")
        self.bytes = sum((folder / f"{n:012d}.seg").stat().st_size for n in segments
                         if n >= self._cursor[0]) - self._cursor[1]  # fmt: skip
        self.records = sum(1 for _ in self._iter(self._cursor))

    def append(self, records: list[Record]) -> bool:
        """Queue ``records`` (all or none); False when the spool is full."""
        blob = b"".join(_encode(r) for r in records)
        with self._lock:
            if self.bytes + len(blob) > self.max_bytes:
                return False
            if self._writer.tell() >= _SEGMENT_BYTES:
                self._writer.close()
                self._write_no += 1
                self._writer = (self.folder / f"{self._write_no:012d}.seg").open("ab")
            self._writer.write(blob)
            self._writer.flush()
            self.bytes += len(blob)
            self.records += len(records)
        return True

    def peek(self, limit: int) -> tuple[list[Record], Position]:
        """Up to ``limit`` records from the cursor on, and the position after them."""
        out: list[Record] = []
        end = self._cursor
        for record, after in self._iter(self._cursor):
            out.append(record)
            end = after
            if len(out) >= limit:
                break
        return out, end

    def commit(self, position: Position, count: int) -> None:
        """Everything before ``position`` was delivered: advance the cursor, drop old segments."""
        with self._lock:
            before = self._cursor
            self._cursor = position
            tmp = self.folder / "cursor.tmp"
            tmp.write_text(f"{position[0]} {position[1]}")
            tmp.replace(self.folder / "cursor")
            done = self._size_between(before, position)
            self.bytes -= done
            self.records -= count
            for n in self._segments():
                if n < position[0]:
                    (self.folder / f"{n:012d}.seg").unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._writer.close()

    def _size_between(self, a: Position, b: Position) -> int:
        if a[0] == b[0]:
            return b[1] - a[1]
        size = (self.folder / f"{a[0]:012d}.seg").stat().st_size - a[1]
        for n in range(a[0] + 1, b[0]):
            path = self.folder / f"{n:012d}.seg"
            size += path.stat().st_size if path.exists() else 0
        return size + b[1]

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.seg") if p.stem.isdigit())

    def _read_cursor(self) -> Position:
        try:
            seg, off = (self.folder / "cursor").read_text().split()
            return int(seg), int(off)
        except (FileNotFoundError, ValueError):
            first = self._segments()
            return (first[0] if first else 1), 0

    def _iter(self, start: Position) -> Iterator[tuple[Record, Position]]:
        for n in self._segments():
            if n < start[0]:
                continue
            with (self.folder / f"{n:012d}.seg").open("rb") as f:
                if n == start[0]:
                    f.seek(start[1])
                while True:
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break  # end, or a record being written right now
                    length, topic_len, key_len = _HEADER.unpack(header)
                    body = f.read(length)
                    if len(body) < length:
                        break
                    topic = body[:topic_len].decode()
                    key = body[topic_len : topic_len + key_len] if key_len != 0xFFFFFFFF else None
                    offset = topic_len + (0 if key is None else key_len)
                    yield (topic, key, body[offset:]), (n, f.tell())


def _encode(record: Record) -> bytes:
    topic, key, value = record
    t = topic.encode()
    k = key if key is not None else b""
    body = t + k + value
    return _HEADER.pack(len(body), len(t), len(k) if key is not None else 0xFFFFFFFF) + body
