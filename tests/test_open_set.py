"""Open-set scores on embeddings whose geometry is known: clusters for the known classes, a
shared "domain" offset, and unknown points that share the domain but no class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tutorloop.evaluation.open_set import (
    RelativeMahalanobis,
    auroc,
    nearest_neighbour_similarity,
    threshold_for_acceptance,
    threshold_for_accuracy_drop,
)

_DIM, _CLASSES, _PER_CLASS = 32, 6, 25


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    domain = rng.normal(0, 5, _DIM)  # what every in-domain sentence shares
    centres = domain + rng.normal(0, 3, (_CLASSES + 2, _DIM))
    known, unknown = centres[:_CLASSES], centres[_CLASSES:]
    targets = np.repeat(np.arange(_CLASSES), _PER_CLASS)
    train = known[targets] + rng.normal(0, 1, (len(targets), _DIM))
    test_in = known[targets] + rng.normal(0, 1, (len(targets), _DIM))
    test_out = unknown[np.arange(60) % 2] + rng.normal(0, 1, (60, _DIM))
    return train, targets, test_in, test_out


def test_relative_mahalanobis_ranks_unknown_classes_below_known_ones(tmp_path: Path) -> None:
    train, targets, test_in, test_out = _world()
    scorer = RelativeMahalanobis.fit(train, targets)
    assert auroc(scorer.score(test_in), scorer.score(test_out)) > 0.99
    # Stored with a model and loaded by serving: the same scores after a round trip.
    scorer.save(tmp_path / "open_set.npz")
    loaded = RelativeMahalanobis.load(tmp_path / "open_set.npz")
    assert np.allclose(loaded.score(test_out), scorer.score(test_out))


def test_fewer_rows_than_dimensions_still_give_finite_scores() -> None:
    # 2 rows per class in 32 dimensions: the sample covariance is singular, the shrunk one not.
    train, targets, test_in, test_out = _world()
    keep = np.concatenate([np.nonzero(targets == k)[0][:2] for k in range(_CLASSES)])
    scorer = RelativeMahalanobis.fit(train[keep], targets[keep])
    scores = scorer.score(np.vstack([test_in, test_out]))
    assert np.isfinite(scores).all()
    assert auroc(scorer.score(test_in), scorer.score(test_out)) > 0.9


def test_a_scorer_needs_two_classes_and_more_rows_than_classes() -> None:
    train, *_ = _world()
    with pytest.raises(ValueError, match="two classes"):
        RelativeMahalanobis.fit(train[:5], np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="more rows than classes"):
        RelativeMahalanobis.fit(train[:3], np.arange(3))


def test_nearest_neighbour_similarity_is_one_on_a_memorised_row() -> None:
    train, _, _, test_out = _world()
    assert np.allclose(nearest_neighbour_similarity(train, train[:3]), 1.0)
    assert (nearest_neighbour_similarity(train, test_out) < 1.0).all()
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbour_similarity(train, test_out, k=len(train) + 1)


def test_threshold_for_acceptance_keeps_that_share_of_in_scope_rows() -> None:
    scores = np.arange(100, dtype=float)
    threshold = threshold_for_acceptance(scores, 0.95)
    assert (scores >= threshold).mean() == pytest.approx(0.95)


def test_threshold_for_accuracy_drop_loses_at_most_the_allowed_accuracy() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    # Low scores are more often wrong, as with a useful score.
    correct = rng.random(200) < 1 / (1 + np.exp(-2 * scores - 1))
    for drop in (0.0, 0.02, 0.1):
        threshold = threshold_for_accuracy_drop(scores, correct, drop)
        kept_correct = (correct & (scores >= threshold)).mean()
        assert correct.mean() - kept_correct <= drop + 1e-9
        # The highest such threshold: abstaining on one more row would exceed the drop.
        stricter = np.sort(scores[scores >= threshold])[1]
        assert correct.mean() - (correct & (scores >= stricter)).mean() > drop
    assert threshold_for_accuracy_drop(scores, np.zeros(200, dtype=bool), 0.0) == np.inf
