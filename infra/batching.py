"""Length-sorted batches: the one inference loop shape that tutorloop's models share.

Texts of similar length batch with little padding (2-3x faster than input order on the demo's
queries). Callers run each batch and write its results back at the batch's indices, so the
output stays in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized


def length_sorted_batches(items: Sequence[Sized], size: int) -> Iterator[list[int]]:
    """Indices of ``items`` in batches of at most ``size``, shortest items first."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]
