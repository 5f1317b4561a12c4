"""The local teacher: sentence embeddings from a larger encoder and a logistic-regression head.

The embedded default's reference teacher is all-mpnet-base-v2 with a head fit on a labeled
teacher pool; it stands in for a frontier LLM in the demo and costs nothing per call. A fitted
teacher is a folder: ``teacher.json`` (labels, encoder, metrics) and ``head.npz`` (weights,
no pickle). Its version is the hash of both, so a refit teacher never reuses a stale cache.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.metrics import FloatArray, Quality, quality
from tutorloop.evaluation.retrieval import RetrievalMemory, interpolate
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import JsonDigest
from tutorloop.labeling.embeddings import Encoder
from tutorloop.labeling.labeled_csv import LabeledRows
from tutorloop.labeling.models import resolve_model
from tutorloop.labeling.teacher import TeacherAnswer, TeacherInfo, TeacherResult, normalized

_META = "teacher.json"
_HEAD = "head.npz"
_MEMORY = "memory.npz"
# The pool's nearest rows vote with these (the serving memory's middle grid values); only the
# mixture weight is a setting (teacher.knn_weight).
_KNN_K = 10
_KNN_TAU = 0.05


class TeacherNotFittedError(TutorloopError):
    """No fitted local teacher where the configuration points."""


@dataclass(frozen=True)
class FitReport:
    folder: Path
    version: str
    n_examples: int
    n_labels: int
    train_accuracy: float


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _version(folder: Path) -> str:
    digest = JsonDigest()
    # A teacher without the kNN vote has no memory file and keeps the version it always had.
    for name in (_META, _HEAD, *([_MEMORY] if (folder / _MEMORY).is_file() else [])):
        digest.add_bytes((folder / name).read_bytes())
    return digest.hexdigest(16)


class LocalTeacher:
    """A fitted local teacher, loaded from its folder."""

    def __init__(self, folder: Path, models_dir: Path, *, batch_size: int = 64) -> None:
        meta_path = folder / _META
        if not meta_path.is_file() or not (folder / _HEAD).is_file():
            raise TeacherNotFittedError(
                f"no fitted local teacher in {folder}; run `tutorloop teacher fit --data CSV`"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        with np.load(folder / _HEAD) as head:
            self._coef = head["coef"]
            self._intercept = head["intercept"]
        self.labels: tuple[str, ...] = tuple(self.meta["labels"])
        knn = self.meta["head"].get("knn")
        self._knn_weight = float(knn["weight"]) if knn else 0.0
        self._memory = RetrievalMemory.load(folder / _MEMORY) if knn else None
        self._encoder_name: str = self.meta["encoder"]
        self._encoder = Encoder(
            resolve_model(self._encoder_name, models_dir), batch_size=batch_size
        )
        version = _version(folder)
        self._info = TeacherInfo(f"local:{self._encoder_name}:{version}", version, self.labels)

    @property
    def info(self) -> TeacherInfo:
        return self._info

    @property
    def embedding_source(self) -> str:
        return f"local:{self._encoder_name}"

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """The teacher encoder's L2-normalized embeddings: what its head reads, and what
        representation distillation pulls the student toward."""
        return self._encoder.encode(texts)

    def predict_proba(
        self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> FloatArray:
        emb = self._encoder.encode(texts, on_batch=on_batch)
        probs = _softmax(emb @ self._coef.T + self._intercept)
        if self._memory is None:
            return probs
        votes = self._memory.label_distribution(emb, k=_KNN_K, tau=_KNN_TAU)
        return interpolate(probs, votes, self._knn_weight)

    def label_batch(self, texts: Sequence[str]) -> list[TeacherResult]:
        probs = self.predict_proba(texts)
        results: list[TeacherResult] = []
        for row in probs:
            best = int(row.argmax())
            soft = normalized(dict(zip(self.labels, row.tolist(), strict=True)), self.labels)
            results.append(TeacherAnswer(self.labels[best], soft, float(row[best])))
        return results

    def evaluate(
        self, rows: LabeledRows, *, on_batch: Callable[[int], None] | None = None
    ) -> tuple[Quality, int]:
        """Quality on ``rows``; rows whose label the teacher does not know count as errors.

        Returns the quality and how many rows had an unknown label.
        """
        targets = label_targets(self.labels, rows.labels)
        probs = self.predict_proba(rows.texts, on_batch=on_batch)
        return quality(probs, targets), int((targets < 0).sum())


def fit_local_teacher(
    rows: LabeledRows,
    folder: Path,
    *,
    encoder: str,
    models_dir: Path,
    c: float = 50.0,
    knn_weight: float = 0.0,
    on_batch: Callable[[int], None] | None = None,
) -> FitReport:
    """Embed ``rows``, fit a multinomial logistic-regression head, save atomically to ``folder``.

    With ``knn_weight`` > 0 the pool's embeddings are kept too, and the teacher's answer is
    ``(1 - knn_weight)`` x the head's distribution + ``knn_weight`` x the vote of the pool's 10
    most similar rows (a kNN-LM-style mixture, as the serving memory does for the student).
    """
    from sklearn.linear_model import LogisticRegression

    labels = rows.label_set
    if len(labels) < 2:
        raise TutorloopError("a teacher needs at least two labels in its pool")
    enc = Encoder(resolve_model(encoder, models_dir))
    emb = enc.encode(rows.texts, on_batch=on_batch)
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[label] for label in rows.labels])
    head = LogisticRegression(C=c, max_iter=2000)
    head.fit(emb, targets)
    train_acc = float((head.predict(emb) == targets).mean())
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        staged = Path(tmp) / "teacher"
        staged.mkdir()
        np.savez(
            staged / _HEAD,
            coef=head.coef_.astype(np.float32),
            intercept=head.intercept_.astype(np.float32),
        )
        if knn_weight > 0:
            RetrievalMemory.build(emb, targets, len(labels)).save(staged / _MEMORY)
        meta = {
            "format": 1,
            "labels": labels,
            "encoder": encoder,
            "head": {
                "kind": "logistic_regression",
                "C": c,
                "knn": {"weight": knn_weight, "k": _KNN_K, "tau": _KNN_TAU}
                if knn_weight > 0
                else None,
            },
            "n_examples": len(rows),
            "train_accuracy": train_acc,
        }
        (staged / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if folder.exists():
            retired = Path(tmp) / "previous"
            folder.rename(retired)
        staged.rename(folder)
    version = _version(folder)
    return FitReport(folder, version, len(rows), len(labels), train_acc)
