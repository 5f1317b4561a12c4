"""The int8 artifact's own view of a version's rows, computed once after export for what is
fitted on it (the open-set scorer, the retrieval memory): embeddings and targets of the
training rows, and logits, embeddings and targets of the validation rows one query at a time,
exactly as serving computes them. Rows of the task's out-of-scope label, if it has one, and of
labels the model does not know are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.metrics import FloatArray, IntArray
from tutorloop.registry.onnx_model import INT8, OnnxStudent, load_onnx_student


@dataclass(frozen=True)
class ServedRows:
    model: OnnxStudent  # the int8 artifact, without the extras fitted on these rows
    train_embeddings: FloatArray
    train_targets: IntArray
    validation_logits: FloatArray
    validation_embeddings: FloatArray
    validation_targets: IntArray


def served_rows(
    folder: Path,
    train: list[tuple[str, str]],
    validation: list[tuple[str, str]],
    *,
    oos_label: str = "",
) -> ServedRows | str:
    """The int8 artifact's embeddings of ``train`` and ``validation`` ((text, label) rows), or
    why there is nothing to fit on."""
    model = load_onnx_student(folder, verified=True, model_path=folder / INT8)
    if not model.has_embedding:
        return "the artifact has no embedding output (re-export)"
    train = [(t, y) for t, y in train if y != oos_label and y in model.labels]
    validation = [(t, y) for t, y in validation if y != oos_label and y in model.labels]
    if len({y for _, y in train}) < 2 or len(train) <= len({y for _, y in train}):
        return f"too few training rows ({len(train)})"
    if not validation:
        return "no validation rows to choose on"
    # Means and neighbours average out batching's small shifts; what is chosen on the
    # validation rows sees them exactly as serving does, one query at a time.
    texts = [t for t, _ in train]
    embedded = model.logits_and_embeddings(texts, batch=32)[1]
    one_by_one = [model.logits_and_embeddings([text]) for text, _ in validation]
    return ServedRows(
        model=model,
        train_embeddings=embedded,
        train_targets=label_targets(model.labels, [y for _, y in train]),
        validation_logits=np.vstack([logits for logits, _ in one_by_one]),
        validation_embeddings=np.vstack([emb for _, emb in one_by_one]),
        validation_targets=label_targets(model.labels, [y for _, y in validation]),
    )
