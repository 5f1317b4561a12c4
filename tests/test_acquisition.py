"""Acquisition under a budget: uncertainty by margin, diversity by k-center, audit cases first.
The cycle's use of it (the exported champion's view) is tested in test_open_set_serving.py,
which shares one exported student between the tests that read its embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from tutorloop.labeling.acquisition import k_center_greedy, margins, select


def _clusters(rng: np.random.Generator, centers: int, per: int, dim: int = 16) -> np.ndarray:
    middle = rng.normal(size=(centers, dim)) * 5
    return np.vstack([c + rng.normal(scale=0.05, size=(per, dim)) for c in middle])


def test_margin_is_top1_minus_top2() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    assert margins(probs) == pytest.approx([0.2, 0.01, 0.85])


def test_k_center_takes_one_case_per_cluster_and_skips_what_is_covered() -> None:
    points = _clusters(np.random.default_rng(0), centers=4, per=25)
    picked = k_center_greedy(points, 4)
    assert sorted(i // 25 for i in picked) == [0, 1, 2, 3]
    # With clusters 0 and 1 labeled already, two picks go to clusters 2 and 3.
    covered = points[[0, 30]]
    assert sorted(i // 25 for i in k_center_greedy(points, 2, covered)) == [2, 3]
    assert k_center_greedy(points, 0) == [] and len(k_center_greedy(points[:3], 10)) == 3


def test_policies_choose_differently_and_audit_cases_always_come_first() -> None:
    rng = np.random.default_rng(1)
    n = 60
    # The 20 most uncertain cases are near-copies of one question; the rest are spread out.
    embeddings = np.vstack([_clusters(rng, 1, 20), _clusters(rng, 40, 1)])
    top = np.concatenate([np.full(20, 0.34), np.linspace(0.5, 0.95, 40)])
    probs = np.stack([top, 1 - top - 0.01, np.full(n, 0.01)], axis=1)
    probs[:20, 1] = 0.33  # margin 0.01: the closest calls
    assert select("oldest", 5, probs) == [0, 1, 2, 3, 4]
    by_margin = select("margin", 10, probs)
    assert set(by_margin) <= set(range(20))
    diverse = select("margin_diverse", 10, probs, embeddings=embeddings)
    assert len(set(diverse)) == 10
    assert sum(i < 20 for i in diverse) <= 2  # one question is paid for about once
    always = np.zeros(n, dtype=bool)
    always[[45, 59]] = True
    chosen = select("margin", 4, probs, always=always)
    assert chosen[:2] == [45, 59] and len(chosen) == 4
    assert select("margin", 1, probs, always=always) == [45]
    with pytest.raises(ValueError, match="embeddings"):
        select("margin_diverse", 3, probs)
