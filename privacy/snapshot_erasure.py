"""Erasure on disk: dataset snapshots rewritten without an erased user's rows.

A dataset version's snapshot (``<data_dir>/datasets/<hash>/``, a ``datasets`` table with a
``case_id`` column) holds case texts. Erasing a user writes a successor snapshot without their
rows, named by a hash of the old version and the erased case ids (deterministic: the same
erasure gives the same successor), and replaces the old folder by a tombstone
(``ERASED.json``: the erasure and the successor) so nothing of the user's text stays on disk.
Files only: :mod:`tutorloop.privacy.erasure` records the new version in the warehouse.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tutorloop.infra.hashing import JsonDigest

TOMBSTONE = "ERASED.json"
_SPEC = "tutorloop.json"


@dataclass(frozen=True)
class RewrittenSnapshot:
    old_hash: str
    new_hash: str
    path: Path
    removed: int  # rows dropped
    counts: dict[str, int]  # rows per split left


def successor_hash(old_hash: str, erased_case_ids: list[str]) -> str:
    return JsonDigest().add({"erased_from": old_hash, "cases": sorted(erased_case_ids)}).hexdigest()


def rewrite_snapshot(
    old_hash: str, path: Path, erased_case_ids: set[str]
) -> RewrittenSnapshot | None:
    """Write the successor of the snapshot at ``path`` without ``erased_case_ids``; None when
    the folder is gone or already a tombstone. The old folder is left for :func:`tombstone`."""
    from datasets import Dataset, load_from_disk
    from datasets.utils.logging import disable_progress_bar

    if not path.is_dir() or (path / TOMBSTONE).exists():
        return None
    disable_progress_bar()
    table = load_from_disk(str(path))
    keep = [i for i, case in enumerate(table["case_id"]) if case not in erased_case_ids]
    removed = len(table) - len(keep)
    new_hash = successor_hash(old_hash, sorted(erased_case_ids))
    target = path.parent / new_hash
    # A copy, not ``table.select(keep)``: a contiguous selection is an Arrow slice, and
    # saving a slice writes the whole underlying string buffer, erased texts included.
    kept = Dataset.from_dict(table.select(keep).to_dict(), features=table.features)
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            staged = Path(tmp) / "dataset"
            kept.save_to_disk(str(staged))
            if (path / _SPEC).exists():
                shutil.copy2(path / _SPEC, staged / _SPEC)
            staged.rename(target)
    return RewrittenSnapshot(old_hash, new_hash, target, removed, dict(Counter(kept["split"])))


def tombstone(path: Path, *, erasure_id: str, successor: str | None) -> None:
    """Replace the folder's content by a tombstone naming the erasure and the successor."""
    if not path.is_dir() or (path / TOMBSTONE).exists():
        return
    marker = {"erasure_id": erasure_id, "successor": successor}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "tombstone"
        staged.mkdir()
        (staged / TOMBSTONE).write_text(json.dumps(marker))
        old = path.with_name(path.name + ".erasing")
        path.rename(old)
        staged.rename(path)
        shutil.rmtree(old)
