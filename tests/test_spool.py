"""The on-disk event spool: order, segments, the cursor across restarts, and the size bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from tutorloop.streams import spool as spool_module
from tutorloop.streams.spool import DiskSpool


def test_order_segments_restart_and_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "_SEGMENT_BYTES", 200)  # a new segment every few records
    spool = DiskSpool(tmp_path, max_bytes=10_000)
    records = [("t", None if i % 3 == 0 else b"k%d" % i, b"v" * 40 + b"%d" % i) for i in range(50)]
    for record in records[:40]:
        assert spool.append([record])
    assert len(list(tmp_path.glob("*.seg"))) > 5 and spool.records == 40
    batch, end = spool.peek(15)
    assert batch == records[:15]
    spool.commit(end, len(batch))
    spool.close()

    reopened = DiskSpool(tmp_path, max_bytes=10_000)  # a restart resumes at the cursor
    assert reopened.records == 25
    assert reopened.append(records[40:])
    rest: list[tuple[str, bytes | None, bytes]] = []
    while reopened.records:
        batch, end = reopened.peek(7)
        rest.extend(batch)
        reopened.commit(end, len(batch))
    assert rest == records[15:]
    assert reopened.bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # delivered segments are deleted

    full = DiskSpool(tmp_path / "small", max_bytes=300)
    assert full.append(records[:4]) and not full.append(records[4:10])  # all or none
    assert full.records == 4
