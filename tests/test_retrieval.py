"""Retrieval memory on embeddings of known geometry: clusters per label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tutorloop.evaluation.retrieval import RetrievalMemory, choose_interpolation, interpolate


def _clusters(seed: int, per_label: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, 16))
    targets = np.repeat(np.arange(5), per_label)
    return centres[targets] + rng.normal(0, 0.2, (len(targets), 16)), targets


def test_the_memory_votes_for_the_label_of_the_nearest_rows(tmp_path: Path) -> None:
    train, targets = _clusters(0)
    memory = RetrievalMemory.build(train, targets, 5)
    queries = train[::7] + 0.05
    dist = memory.label_distribution(queries, k=5, tau=0.05)
    assert np.allclose(dist.sum(axis=1), 1)
    assert (dist.argmax(axis=1) == targets[::7]).all()
    memory.save(tmp_path / "memory.npz")  # float16 keys: what an artifact would ship
    loaded = RetrievalMemory.load(tmp_path / "memory.npz")
    assert np.allclose(loaded.label_distribution(queries, k=5, tau=0.05), dist, atol=1e-2)
    with pytest.raises(ValueError, match="one label per embedding"):
        RetrievalMemory.build(train, targets[:3], 5)


def test_interpolation_is_chosen_only_when_it_lowers_validation_loss() -> None:
    train, targets = _clusters(0)
    val, val_targets = _clusters(0)  # the same centres, new noise
    val = val + np.random.default_rng(9).normal(0, 0.2, val.shape)
    uniform = np.full((len(val), 5), 0.2)  # a student that knows nothing
    informative = RetrievalMemory.build(train, targets, 5)
    assert choose_interpolation(uniform, informative, val, val_targets)[2] > 0
    shuffled = RetrievalMemory.build(train, np.random.default_rng(3).permutation(targets), 5)
    confident = np.eye(5)[val_targets] * 0.9 + 0.02  # a student that is right
    assert choose_interpolation(confident, shuffled, val, val_targets)[2] == 0.0
    mixed = interpolate(confident, uniform, 0.5)
    assert np.allclose(mixed.sum(axis=1), 1.0)
