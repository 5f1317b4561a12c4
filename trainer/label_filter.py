"""Label QA before a retrain: drop teacher labels the rest of the training data contradicts.

Confident learning (Northcutt et al. 2021, via ``cleanlab``): every training row's hard label
is checked against out-of-fold probabilities from a logistic regression on the warm-start
student's own sentence embeddings (the champion has not trained on this cycle's new cases, and
each fold's model never sees the rows it scores). A row is flagged when its label is
confidently contradicted, ``prune_by_noise_rate`` deciding how many per class. Only rows the
teacher alone labeled are dropped: a person's label is the ground truth the filter serves.

Off by default (``trainer.label_filter``): on Banking77 55-58% of the rows it dropped had a
wrong teacher label (20% of the captured rows did), but the retrained student did not gain
(BENCHMARKS.md, "Label QA"). Never in a DP run: which
private rows are dropped would depend on the other private rows' labels, a release the privacy
accountant does not count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tutorloop.evaluation.retrieval import unit_rows
from tutorloop.infra.tables import LabelSource, Split
from tutorloop.trainer.inference import predict_logits_and_embeddings

_FOLDS = 5
# Inverse L2 strength of the fold models; found on the captured rows of bench/dp.py's split by
# label-error precision (not by the retrained student's accuracy).
_C = 10.0


@dataclass(frozen=True)
class LabelFilterReport:
    """What the filter did, for the model card (``metrics.label_filter``)."""

    method: str
    checked: int = 0
    flagged: int = 0
    dropped_case_ids: list[str] = field(default_factory=list)
    off_reason: str | None = None

    def card(self) -> dict[str, Any]:
        return {**asdict(self), "dropped": len(self.dropped_case_ids)}


def label_issues(embeddings: np.ndarray, labels: np.ndarray, n_labels: int, seed: int) -> Any:
    """A boolean mask of the rows whose label the other rows' embeddings confidently contradict."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    x = unit_rows(embeddings)
    probs = np.zeros((len(labels), n_labels))
    for fit, held in KFold(_FOLDS, shuffle=True, random_state=seed).split(x):
        model = LogisticRegression(C=_C, max_iter=3000).fit(x[fit], labels[fit])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return find_label_issues(labels, probs, filter_by="prune_by_noise_rate")


def filter_teacher_labels(
    student: Any, rows: Any, method: str, *, seed: int, dp: bool, max_length: int = 64
) -> tuple[Any, LabelFilterReport | None]:
    """``rows`` (a dataset version) without the teacher-labeled rows the filter flags."""
    if method == "off":
        return rows, None
    if dp:
        return rows, LabelFilterReport(method, off_reason="not in DP runs")
    splits, sources, all_labels = rows["split"], rows["source"], rows["label"]
    checked = [i for i, split in enumerate(splits) if split != Split.EVAL]
    labels = np.array([all_labels[i] for i in checked])
    if len(checked) < 2 * _FOLDS or len(set(labels.tolist())) < 2:
        return rows, LabelFilterReport(method, len(checked), off_reason="too few rows")
    texts = rows["text"]
    ids = student.tokenizer([texts[i] for i in checked], truncation=True,
                            max_length=max_length)["input_ids"]  # fmt: skip
    _, embeddings = predict_logits_and_embeddings(student.model, student.tokenizer, ids)
    flagged = label_issues(embeddings.numpy(), labels, rows.features["label"].num_classes, seed)
    drop = {
        checked[k] for k in np.flatnonzero(flagged) if sources[checked[k]] == LabelSource.TEACHER
    }
    report = LabelFilterReport(method, len(checked), int(flagged.sum()))
    if all(i in drop for i in checked if splits[i] == Split.TRAIN):
        return rows, replace(report, off_reason="it would drop every training row")
    case_ids = rows["case_id"]
    kept = rows.select([i for i in range(len(rows)) if i not in drop])
    return kept, replace(report, dropped_case_ids=sorted(case_ids[i] for i in drop))
