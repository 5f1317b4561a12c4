"""The one place tutorloop hashes: content fingerprints, subject hashes, stable buckets.

Every stored id, policy version, cache key and dataset hash comes from here, so two modules
can never disagree on how a thing is named (they did: erasure and lineage each hashed user ids).

- :func:`fingerprint` — sha256 of parts joined by NUL (NUL cannot occur in our text keys, so
  ``("ab", "c")`` and ``("a", "bc")`` differ), optionally truncated to a short id.
- :func:`stable_rank` / :func:`stable_unit` — a number from a key that is the same on every
  machine and run (unlike ``hash()``, salted per process): for sampling and bucketing.
- :func:`subject_hash` — how erasure records and lineage name a user without keeping the id.
- :func:`case_text_hash` — texts equal up to case and spacing share it (cache, dedup).
- :func:`file_sha256` and :class:`JsonDigest` — checksums of artifacts and canonical content.
- :func:`eval_set_digest` — an evaluation set's version, from its (case_id, label) pairs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1024 * 1024


def fingerprint(*parts: str | bytes, length: int | None = None) -> str:
    """Hex sha256 of ``parts`` joined by NUL; the first ``length`` hex digits when given."""
    digest = hashlib.sha256(b"\0".join(p.encode() if isinstance(p, str) else p for p in parts))
    return digest.hexdigest()[:length] if length else digest.hexdigest()


def stable_rank(key: str) -> int:
    """A 64-bit integer from ``key`` (blake2b), identical across processes and machines."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def stable_unit(key: str) -> float:
    """A uniform number in [0, 1) from ``key``: a stable bucket for sampling."""
    return stable_rank(key) / 2**64


def subject_hash(user_id: str) -> str:
    """``erasures.user_id``: the erased subject, named by hash only."""
    return "sha256:" + fingerprint(user_id)


def case_text_hash(text: str) -> str:
    """``cases.text_hash``: sha256 of the text lowercased with whitespace collapsed.

    Texts that differ only in case or spacing share a hash: the teacher cache answers them
    once and the dataset builder keeps one of them.
    """
    return fingerprint(" ".join(text.lower().split()))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class JsonDigest:
    """sha256 over a sequence of JSON values (and raw byte blocks), in the order given."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, value: Any, *, compact: bool = False) -> JsonDigest:
        """Add ``value`` as JSON with sorted keys (``compact``: no spaces after separators)."""
        separators = (",", ":") if compact else None
        self._digest.update(json.dumps(value, sort_keys=True, separators=separators).encode())
        return self

    def add_bytes(self, data: bytes) -> JsonDigest:
        self._digest.update(data)
        return self

    def hexdigest(self, length: int | None = None) -> str:
        value = self._digest.hexdigest()
        return value[:length] if length else value


def eval_set_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """The evaluation set's version: sha256 of its (case_id, label) pairs in case-id order
    ("" for none). The dataset builder records it, the gates report it."""
    ordered = sorted([case_id, label] for case_id, label in pairs)
    return JsonDigest().add(ordered, compact=True).hexdigest() if ordered else ""
