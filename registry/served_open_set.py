"""Fit the open-set scorer on the served network, like its temperature.

After export the relative-Mahalanobis scorer (:mod:`tutorloop.evaluation.open_set`) is fitted
on the int8 artifact's own embeddings of the training rows, and its threshold chosen on the
validation rows, one query at a time as it serves: the highest in-scope score below which
abstaining costs at most ``max_accuracy_drop`` of accuracy (the contract's
``fallback.open_set_max_accuracy_drop``; an abstention on an in-scope row counts as an error)
with 95% confidence on the rows to come, not only on these
(:func:`~tutorloop.evaluation.open_set.threshold_for_accuracy_drop`). Too few validation rows
place no threshold: the section says so, and the scorer ships but never abstains.
No labelled out-of-scope rows are needed; rows of the task's out-of-scope label, if it has
one, are left out of both. Whether serving and the gates use it is the contract's
``fallback.open_set``; the scorer is fitted either way, so turning it on needs no re-export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.open_set import RelativeMahalanobis, threshold_for_accuracy_drop
from tutorloop.registry.onnx_model import OPEN_SET
from tutorloop.registry.served_embeddings import ServedRows

METHOD = "relative_mahalanobis"


def fit_served_open_set(
    folder: Path, rows: ServedRows | str, *, max_accuracy_drop: float
) -> dict[str, Any]:
    """Write ``open_set.npz`` into ``folder`` and return the card's ``open_set`` section;
    without rows to fit on (``rows`` is then the reason) no file is written."""
    if isinstance(rows, str):
        return {"fitted": False, "reason": rows}
    scorer = RelativeMahalanobis.fit(rows.train_embeddings, rows.train_targets)
    scores = scorer.score(rows.validation_embeddings)
    correct = rows.validation_logits.argmax(axis=1) == rows.validation_targets
    threshold = threshold_for_accuracy_drop(scores, correct, max_accuracy_drop)
    scorer.save(folder / OPEN_SET)
    kept = scores >= threshold
    placed = bool(np.isfinite(threshold))
    return {
        "fitted": True, "method": METHOD, "threshold": threshold if placed else None,
        **({} if placed else {"reason": f"{int(correct.sum())} correct validation rows cannot "
            f"hold a {max_accuracy_drop:g} accuracy budget with 95% confidence: no threshold"}),
        "max_accuracy_drop": max_accuracy_drop, "train_rows": len(rows.train_targets),
        "validation_rows": len(correct),
        "validation_abstention": float(1 - kept.mean()),
        "validation_accuracy": float(correct.mean()),
        "validation_accuracy_answered": float((correct & kept).mean()),
        "fitted_on": "int8 artifact; threshold on the validation split, one query at a time",
    }  # fmt: skip
