"""Which captured cases to label when the budget cannot cover them all.

Policies, each a function of the student's view of the cases (its probabilities and sentence
embeddings), in arrival order:

- ``oldest``: the first ``budget`` cases (what a fixed capture threshold plus a queue does);
- ``margin``: the smallest top-1 minus top-2 probability first (uncertainty sampling);
- ``margin_diverse``: the ``pool_factor`` x ``budget`` smallest margins, then k-center greedy
  on the embeddings, so that a cluster of near-identical confusing questions is not all paid
  for (uncertainty, then diversity, as in cluster-margin sampling).

Cases flagged ``always`` (the unbiased audit slice, escalations) are taken first whatever the
policy: they are what evaluation and the reviewers rely on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Policy = Literal["oldest", "margin", "margin_diverse"]
POLICIES: tuple[Policy, ...] = ("oldest", "margin", "margin_diverse")

__all__ = ["POLICIES", "Policy", "k_center_greedy", "margins", "select"]


def margins(probs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Top-1 minus top-2 probability per row: 0 is a coin flip between two labels."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]).astype(np.float64)


def _unit_rows(x: NDArray[np.floating]) -> NDArray[np.float64]:
    rows = np.asarray(x, dtype=np.float64)
    unit: NDArray[np.float64] = rows / np.maximum(
        np.linalg.norm(rows, axis=1, keepdims=True), 1e-12
    )
    return unit


def k_center_greedy(
    candidates: NDArray[np.floating], k: int, covered: NDArray[np.floating] | None = None
) -> list[int]:
    """``k`` candidate indices, each the farthest (cosine distance) from every point chosen so
    far and from ``covered`` (rows labeled already); the first is the farthest from ``covered``,
    or candidate 0 when there is nothing to be far from."""
    points = _unit_rows(candidates)
    k = min(k, len(points))
    if k <= 0:
        return []
    nearest = np.full(len(points), np.inf)
    if covered is not None and len(covered):
        for start in range(0, len(covered), 4096):  # bounded memory for large labeled sets
            sims = points @ _unit_rows(covered[start : start + 4096]).T
            nearest = np.minimum(nearest, 1.0 - sims.max(axis=1))
    chosen: list[int] = []
    for _ in range(k):
        pick = int(np.argmax(nearest)) if np.isfinite(nearest).any() else 0
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - points @ points[pick])
        nearest[chosen] = -np.inf
    return chosen


def select(
    policy: Policy,
    budget: int,
    probs: NDArray[np.floating],
    *,
    embeddings: NDArray[np.floating] | None = None,
    covered: NDArray[np.floating] | None = None,
    always: NDArray[np.bool_] | None = None,
    pool_factor: int = 4,
) -> list[int]:
    """Indices (into the arrival-ordered cases) of at most ``budget`` cases to label."""
    n = len(probs)
    forced = [int(i) for i in np.flatnonzero(always)] if always is not None else []
    forced = forced[:budget]
    left = budget - len(forced)
    taken = np.zeros(n, dtype=bool)
    taken[forced] = True
    rest = np.flatnonzero(~taken)
    if left <= 0 or not len(rest):
        return forced
    if policy == "oldest":
        return forced + [int(i) for i in rest[:left]]
    order = rest[np.argsort(margins(np.asarray(probs)[rest]), kind="stable")]
    if policy == "margin":
        return forced + [int(i) for i in order[:left]]
    if embeddings is None:
        raise ValueError("margin_diverse needs the cases' embeddings")
    pool = order[: pool_factor * left]
    # Already chosen or labeled: k-center spreads the rest away from both.
    parts = [np.asarray(x) for x in (covered, np.asarray(embeddings)[forced]) if x is not None]
    seen = np.vstack(parts) if parts else None
    picked = k_center_greedy(np.asarray(embeddings)[pool], left, seen)
    return forced + [int(pool[i]) for i in picked]
