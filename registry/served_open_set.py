"""Fit the open-set scorer on the served network, like its temperature.

After export the relative-Mahalanobis scorer (:mod:`tutorloop.evaluation.open_set`) is fitted
on the int8 artifact's own embeddings of the training rows, and its threshold chosen on the
validation rows, one query at a time as it serves: the highest in-scope score below which
abstaining costs at most ``max_accuracy_drop`` of accuracy (the contract's
``fallback.open_set_max_accuracy_drop``; an abstention on an in-scope row counts as an error)
with 95% confidence on the rows to come, not only on these
(:func:`~tutorloop.evaluation.open_set.threshold_for_accuracy_drop`). Too few validation rows
place no threshold: the section says so, and the version has no scorer to serve.
No labelled out-of-scope rows are needed; rows of the task's out-of-scope label, if it has
one, are left out of both. Whether serving and the gates use it is the contract's
``fallback.open_set``; the scorer is fitted either way, so turning it on needs no re-export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.open_set import RelativeMahalanobis, threshold_for_accuracy_drop
from tutorloop.registry.onnx_model import INT8, OPEN_SET, load_onnx_student

METHOD = "relative_mahalanobis"


def fit_served_open_set(
    folder: Path,
    train: list[tuple[str, str]],
    validation: list[tuple[str, str]],
    *,
    max_accuracy_drop: float,
    oos_label: str = "",
) -> dict[str, Any]:
    """Write ``open_set.npz`` into ``folder`` and return the card's ``open_set`` section;
    without enough rows (or an artifact without embeddings) the section says why and no file
    is written. ``train``/``validation``: (text, label) rows of the version's dataset."""
    model = load_onnx_student(folder, verified=True, model_path=folder / INT8)
    if not model.has_embedding:
        return {"fitted": False, "reason": "the artifact has no embedding output (re-export)"}
    train = [(t, y) for t, y in train if y != oos_label and y in model.labels]
    validation = [(t, y) for t, y in validation if y != oos_label and y in model.labels]
    if len({y for _, y in train}) < 2 or len(train) <= len({y for _, y in train}):
        return {"fitted": False, "reason": f"too few training rows ({len(train)})"}
    if not validation:
        return {"fitted": False, "reason": "no validation rows to choose a threshold on"}
    # The class means average out the small shifts of batching; the threshold is chosen on
    # embeddings exactly as serving computes them, one query at a time.
    texts = [t for t, _ in train]
    embedded = np.vstack([model.logits_and_embeddings(texts[i : i + 32])[1]
                          for i in range(0, len(texts), 32)])  # fmt: skip
    scorer = RelativeMahalanobis.fit(embedded, label_targets(model.labels, [y for _, y in train]))
    logits, scores = _one_at_a_time(model, [t for t, _ in validation], scorer)
    correct = logits.argmax(axis=1) == label_targets(model.labels, [y for _, y in validation])
    threshold = threshold_for_accuracy_drop(scores, correct, max_accuracy_drop)
    scorer.save(folder / OPEN_SET)
    kept = scores >= threshold
    placed = bool(np.isfinite(threshold))
    return {
        "fitted": True, "method": METHOD, "threshold": threshold if placed else None,
        **({} if placed else {"reason": f"{int(correct.sum())} correct validation rows cannot "
            f"hold a {max_accuracy_drop:g} accuracy budget with 95% confidence: no threshold"}),
        "max_accuracy_drop": max_accuracy_drop, "train_rows": len(train),
        "validation_rows": len(validation),
        "validation_abstention": float(1 - kept.mean()),
        "validation_accuracy": float(correct.mean()),
        "validation_accuracy_answered": float((correct & kept).mean()),
        "fitted_on": "int8 artifact; threshold on the validation split, one query at a time",
    }  # fmt: skip


def _one_at_a_time(
    model: Any, texts: list[str], scorer: RelativeMahalanobis
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    logits, embeddings = zip(*(model.logits_and_embeddings([text]) for text in texts), strict=True)
    return np.vstack(logits), scorer.score(np.vstack(embeddings))
