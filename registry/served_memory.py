"""Fit the retrieval memory on the served network (:mod:`tutorloop.evaluation.retrieval`).

The int8 artifact's embeddings of the training rows become the memory (``memory.npz``, float16
keys); k, tau and the interpolation weight are chosen on the validation rows by log loss, one
query at a time with the served temperature. A weight of 0 ("the memory does not help these
rows") writes no file. The memory holds one embedding per training row, so it is left out of
DP-trained versions (it would bypass the guarantee the accountant gave), and erasing a user
lists the versions trained on their rows as before: retraining without them rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.retrieval import RetrievalMemory, choose_interpolation, interpolate
from tutorloop.registry.onnx_model import MEMORY, calibrated_proba
from tutorloop.registry.served_embeddings import ServedRows


def fit_served_memory(folder: Path, rows: ServedRows | str, *, dp: bool) -> dict[str, Any]:
    """Write ``memory.npz`` into ``folder`` when it helps; return the card's ``retrieval``."""
    if dp:
        return {"used": False, "reason": "DP-trained: a memory of its rows would bypass DP"}
    if isinstance(rows, str):
        return {"used": False, "reason": rows}
    model = rows.model
    memory = RetrievalMemory.build(rows.train_embeddings, rows.train_targets, len(model.labels))
    student = calibrated_proba(rows.validation_logits, model.temperature)
    targets = rows.validation_targets
    k, tau, weight = choose_interpolation(student, memory, rows.validation_embeddings, targets)
    mixed = interpolate(
        student, memory.label_distribution(rows.validation_embeddings, k=k, tau=tau), weight
    )
    section: dict[str, Any] = {
        "used": weight > 0, "k": k, "tau": tau, "weight": weight,
        "memory_rows": len(rows.train_targets),
        "validation_rows": len(targets),
        "validation_accuracy_student": float(np.mean(student.argmax(1) == targets)),
        "validation_accuracy_with_memory": float(np.mean(mixed.argmax(1) == targets)),
        "chosen_on": "int8 artifact; validation split, one query at a time, by log loss",
    }  # fmt: skip
    if weight > 0:
        memory.save(folder / MEMORY)
    return section
