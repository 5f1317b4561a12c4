"""Open-set scores: how far an input lies from everything the student was trained on.

Max-softmax confidence cannot tell "between two known intents" from "none of them": a query
about something new often lands confidently in the nearest class. These scores look at the
student's sentence embedding instead:

- **Relative Mahalanobis** (Ren et al. 2021, "A Simple Fix to Mahalanobis Distance for
  Improving Near-OOD Detection"): the distance to the nearest class mean under one shared
  covariance, minus the distance to the mean of all training embeddings under their own
  covariance. The subtraction removes what every in-domain sentence shares (the "banking
  query" direction) and keeps what sets a class apart. Covariances are Ledoit-Wolf shrunk:
  with ~20 rows per class a 384-dimensional sample covariance is singular.
- **Nearest neighbour**: cosine similarity to the k-th most similar training embedding.

Both are "in-scope scores": higher means more like the training data. A threshold is chosen
from in-scope validation rows alone (:func:`threshold_for_acceptance`), so a task needs no
labelled out-of-scope examples. Pure numerics, like the rest of this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tutorloop.evaluation.metrics import FloatArray, IntArray


def _mahalanobis(x: FloatArray, mean: FloatArray, precision: FloatArray) -> FloatArray:
    centred = x - mean
    return np.asarray(np.einsum("ij,jk,ik->i", centred, precision, centred))


def _shrunk_covariance(centred: FloatArray) -> FloatArray:
    from sklearn.covariance import LedoitWolf

    return np.asarray(LedoitWolf(assume_centered=True).fit(centred).covariance_)


@dataclass(frozen=True)
class RelativeMahalanobis:
    """Class means and precisions fitted on training embeddings; scores new embeddings."""

    class_means: FloatArray  # (classes, dim)
    precision: FloatArray  # (dim, dim), shared by the classes
    background_mean: FloatArray  # (dim,)
    background_precision: FloatArray  # (dim, dim)

    @classmethod
    def fit(cls, embeddings: FloatArray, targets: IntArray) -> RelativeMahalanobis:
        x = np.asarray(embeddings, dtype=np.float64)
        classes = np.unique(targets)
        if len(classes) < 2 or len(x) <= len(classes):
            raise ValueError(
                f"need rows of at least two classes and more rows than classes "
                f"({len(x)} rows, {len(classes)} classes)"
            )
        # Classes absent from the rows (possible in a small split) get no mean: they can
        # never be the nearest one.
        means = np.stack([x[targets == k].mean(axis=0) for k in classes])
        index = np.searchsorted(classes, targets)
        within = _shrunk_covariance(x - means[index])
        background = x.mean(axis=0)
        # The background covariance is the within-class one plus the scatter of the class
        # means (total = within + between), not a second Ledoit-Wolf fit: shrunk on its own,
        # it is shrunk far less (measured 0.04 against 0.20 on 216 rows of 8 intents), so
        # directions no training row varies in get a *smaller* background variance than
        # within-class one, and an input far off in them (an off-domain question) gets a
        # larger distance to the background than to its nearest class: the relative score
        # then ranked every off-domain question above every in-scope one (AUROC 0.0).
        between = means[index] - background
        return cls(
            class_means=means,
            precision=np.linalg.inv(within),
            background_mean=background,
            background_precision=np.linalg.inv(within + between.T @ between / len(x)),
        )

    @cached_property
    def _projected_means(self) -> tuple[FloatArray, FloatArray]:
        projected = self.class_means @ self.precision
        return projected, np.einsum("ij,ij->i", projected, self.class_means)

    def nearest_class_distance(self, embeddings: FloatArray) -> FloatArray:
        """Squared Mahalanobis distance of each row to its nearest class mean."""
        x = np.asarray(embeddings, dtype=np.float64)
        # (x-m)'P(x-m) = x'Px - 2 m'Px + m'Pm for every class at once: two matrix products
        # per batch instead of one per class (serving scores each request).
        projected, means_term = self._projected_means
        own = np.einsum("ij,jk,ik->i", x, self.precision, x)
        return np.asarray(np.min(own[:, None] - 2 * (x @ projected.T) + means_term, axis=1))

    def score(self, embeddings: FloatArray) -> FloatArray:
        """In-scope score of each row: minus its smallest relative distance to a class."""
        x = np.asarray(embeddings, dtype=np.float64)
        to_background = _mahalanobis(x, self.background_mean, self.background_precision)
        return np.asarray(to_background - self.nearest_class_distance(x))

    def save(self, path: Path) -> None:
        np.savez(
            path,
            class_means=self.class_means,
            precision=self.precision,
            background_mean=self.background_mean,
            background_precision=self.background_precision,
        )

    @classmethod
    def load(cls, path: Path) -> RelativeMahalanobis:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in data.files})


def nearest_neighbour_similarity(
    memory: FloatArray, embeddings: FloatArray, *, k: int = 1
) -> FloatArray:
    """Cosine similarity of each row to its k-th most similar row of ``memory``."""
    if not 1 <= k <= len(memory):
        raise ValueError(f"k must be between 1 and {len(memory)} (the memory's rows)")
    a = memory / np.linalg.norm(memory, axis=1, keepdims=True)
    b = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarities = b @ a.T
    return np.asarray(np.partition(similarities, -k, axis=1)[:, -k])


def threshold_for_acceptance(in_scope_scores: FloatArray, acceptance: float) -> float:
    """The score below which a row is called out of scope, chosen so that ``acceptance`` of
    the given in-scope rows (validation rows, never test rows) are kept."""
    if not 0 < acceptance <= 1:
        raise ValueError(f"acceptance must be in (0, 1], got {acceptance}")
    if len(in_scope_scores) == 0:
        raise ValueError("no in-scope scores to choose a threshold from")
    ordered = np.sort(in_scope_scores)
    kept = math.ceil(acceptance * len(ordered) - 1e-9)
    return float(ordered[len(ordered) - kept])


def threshold_for_accuracy_drop(
    in_scope_scores: FloatArray,
    correct: NDArray[np.bool_],
    max_drop: float,
    *,
    confidence: float | None = 0.95,
) -> float:
    """The score below which an input is called out of scope, chosen on in-scope validation
    rows so that abstaining costs at most ``max_drop`` of accuracy, an abstention on an
    in-scope row counting as an error: the model contract's "abstain on the unknown, but not
    at the known's expense".

    With ``confidence`` (default 0.95) the budget must hold for the rows to come, not just
    for these: the threshold is the highest correct row's score ``X_(k)`` whose share of the
    correct-score distribution below it, ``F(X_(k)) ~ Beta(k, n - k + 1)`` for ``n`` correct
    rows, stays within the budget at that confidence; ``-inf`` (never abstain) when no
    threshold can (too few rows: with 10 correct rows even the lowest leaves a 26% chance of
    losing more than 2 points in 10). ``None`` is the in-sample rule: the highest threshold at
    which these rows lose at most ``max_drop``; on a small split it breaks the budget on new
    rows (measured: 0.7-3.3 points lost on Banking77's test file with 174 validation rows, 26
    points on a quick demo's).
    """
    if len(in_scope_scores) != len(correct) or len(correct) == 0:
        raise ValueError("need one correctness flag per in-scope score, and at least one")
    if confidence is not None:
        from scipy.stats import beta

        right = np.sort(np.asarray(in_scope_scores)[correct])
        if len(right) == 0:
            return float(-np.inf)
        share = max_drop * len(correct) / len(right)  # of the correct rows, what may go
        k = np.arange(1, len(right) + 1)
        held = np.nonzero(beta.ppf(confidence, k, len(right) - k + 1) <= share)[0]
        return float(right[held.max()]) if len(held) else float(-np.inf)
    order = np.argsort(in_scope_scores)
    # Abstaining on the i lowest-scored rows loses the correct ones among them.
    lost = np.r_[0, np.cumsum(correct[order])] / len(correct)
    allowed = int(np.nonzero(lost <= max_drop + 1e-12)[0].max())
    if allowed == len(correct):
        return float(np.inf)  # every validation row may be abstained on: keep none
    return float(in_scope_scores[order][allowed])


def auroc(in_scope_scores: FloatArray, out_of_scope_scores: FloatArray) -> float:
    """How well the score ranks in-scope rows above out-of-scope ones (0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.ones(len(in_scope_scores)), np.zeros(len(out_of_scope_scores))]
    return float(roc_auc_score(truth, np.r_[in_scope_scores, out_of_scope_scores]))
