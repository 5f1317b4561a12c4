"""What the gates, the demo and the benchmarks evaluate: any model with ``predict_proba``.

Three classes implement :class:`Classifier`: the served student (ONNX int8,
``registry.onnx_model.OnnxStudent``), the same student in torch fp32
(``registry.torch_model.TorchStudent``) and the local teacher
(``labeling.teacher_local.LocalTeacher``). Gold labels a model does not know become target
-1: the metrics count such a row as wrong rather than dropping it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tutorloop.evaluation.metrics import FloatArray, IntArray, Quality, quality


class Classifier(Protocol):
    """Calibrated probabilities over ``labels``, one row per text, in input order."""

    @property
    def labels(self) -> Sequence[str]: ...

    def predict_proba(self, texts: list[str], /) -> FloatArray: ...


def label_targets(labels: Sequence[str], truth: Sequence[str]) -> IntArray:
    """Integer targets for ``truth`` in the order of ``labels``; -1 for an unknown label."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(label, -1) for label in truth], dtype=np.int64)


def evaluate(
    model: Classifier, texts: list[str], truth: Sequence[str]
) -> tuple[Quality, FloatArray, IntArray]:
    """``model``'s quality on labeled texts, with the probabilities and targets behind it."""
    probs = model.predict_proba(texts)
    targets = label_targets(model.labels, truth)
    return quality(probs, targets), probs, targets
