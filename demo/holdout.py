"""The demo's open-intent protocol (``--holdout-intents``): a seeded share of the intents is
left out of every stage (seed, evaluation rows, the teacher's pool, traffic) and comes back in
the test file as out of scope. Every champion is then scored on both: in-scope accuracy as
usual, and how well its served open-set scorer (fitted at export,
:mod:`tutorloop.registry.served_open_set`) and its max-softmax confidence tell the unknown
intents apart, each at its own serving threshold.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.open_set import auroc
from tutorloop.labeling.labeled_csv import LabeledRows
from tutorloop.registry.onnx_model import OnnxStudent, calibrated_proba


def unknown_intents(labels: Sequence[str], fraction: float, seed: int) -> set[str]:
    """``fraction`` of the distinct labels, drawn with ``seed`` (none for 0)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--holdout-intents must be in [0, 1), got {fraction}")
    distinct = sorted(set(labels))
    return set(random.Random(seed).sample(distinct, round(fraction * len(distinct))))


def without(rows: LabeledRows, unknown: set[str]) -> LabeledRows:
    keep = [i for i, label in enumerate(rows.labels) if label not in unknown]
    return LabeledRows([rows.texts[i] for i in keep], [rows.labels[i] for i in keep])


@dataclass(frozen=True)
class OpenSetResult:
    """One champion on the open-intent test rows."""

    auroc: float | None  # its open-set score, in scope vs out of scope (None: no scorer)
    auroc_msp: float  # max-softmax confidence, the baseline
    oos_recall: float | None  # out-of-scope rows its scorer's threshold abstains on
    accuracy_abstaining: float | None  # in-scope rows answered and right, with that threshold
    oos_recall_msp: float  # out-of-scope rows below serving.abstain_below
    accuracy_abstaining_msp: float  # in-scope rows answered and right with that threshold
    in_scope_scores: list[float]
    out_of_scope_scores: list[float]
    threshold: float | None


def score_open_set(
    model: OnnxStudent, known: LabeledRows, unknown_texts: list[str], abstain_below: float
) -> OpenSetResult:
    """``model`` on the in-scope rows ``known`` and the out-of-scope ``unknown_texts``."""
    probs_in, scores_in = _scored(model, known.texts)
    probs_out, scores_out = _scored(model, unknown_texts)
    correct = probs_in.argmax(axis=1) == label_targets(model.labels, known.labels)
    msp_in, msp_out = probs_in.max(axis=1), probs_out.max(axis=1)
    scorer = model.open_set
    threshold = scorer.threshold if scorer is not None else None
    return OpenSetResult(
        auroc=None if scores_in is None else auroc(scores_in, scores_out),
        auroc_msp=auroc(msp_in, msp_out),
        oos_recall=None if threshold is None else float(np.mean(scores_out < threshold)),
        accuracy_abstaining=(
            None if threshold is None else float(np.mean(correct & (scores_in >= threshold)))
        ),
        oos_recall_msp=float(np.mean(msp_out < abstain_below)),
        accuracy_abstaining_msp=float(np.mean(correct & (msp_in >= abstain_below))),
        in_scope_scores=[] if scores_in is None else scores_in.tolist(),
        out_of_scope_scores=[] if scores_out is None else scores_out.tolist(),
        threshold=threshold,
    )  # fmt: skip


def _scored(model: OnnxStudent, texts: list[str]) -> tuple[Any, Any]:
    """Calibrated probabilities and (with a scorer) open-set scores, in input order."""
    if model.open_set is None:
        return model.predict_proba(texts), None
    probs, scores = [], []
    for i in range(0, len(texts), 64):
        logits, embeddings = model.logits_and_embeddings(texts[i : i + 64])
        probs.append(calibrated_proba(logits, model.temperature))
        scores.append(model.open_set.scorer.score(embeddings))
    return np.vstack(probs), np.concatenate(scores)
