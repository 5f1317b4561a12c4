"""A registered student served by ONNX Runtime: the int8 model, its tokenizer and temperature.

Loading verifies the version folder's checksums first: a tampered or missing file is refused.
Serving needs neither torch nor transformers: the tokenizer is the ``tokenizers`` (Rust) one
from ``tokenizer.json``, which keeps a serving process small (see the ``peak_rss_mb`` gate).

Artifacts exported since the open-set scores carry a second output, ``embedding`` (the last
hidden layer mean-pooled over real tokens), and the scorer fitted on the artifact's own
embeddings (``open_set.npz``, its threshold in the card's ``open_set`` section): with it,
:meth:`OnnxStudent.predict_with_scope` also says which inputs lie outside what the student
was trained on. Older artifacts load and serve as before, without it. Where it helped its
validation rows, the artifact also carries a retrieval memory (``memory.npz``, the card's
``retrieval`` section) whose neighbours' vote is mixed into every prediction when asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.metrics import (
    FloatArray,  # numpy types only; sklearn loads on first metric
)
from tutorloop.evaluation.open_set import RelativeMahalanobis
from tutorloop.evaluation.retrieval import RetrievalMemory, interpolate
from tutorloop.infra.batching import length_sorted_batches
from tutorloop.registry.store import ArtifactIntegrityError, verify

INT8 = "model_int8.onnx"
FP32 = "model_fp32.onnx"
OPEN_SET = "open_set.npz"
MEMORY = "memory.npz"
EMBEDDING = "embedding"  # the ONNX output the open-set scorer reads


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibrated_proba(logits: FloatArray, temperature: float) -> FloatArray:
    """softmax(logits / temperature), row by row."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    exp = np.exp(z)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


@dataclass
class OnnxStudent:
    version: str
    session: Any
    tokenizer: Any
    labels: list[str]
    temperature: float
    max_length: int
    open_set: OpenSetScorer | None = None
    memory: ServedMemory | None = None

    @property
    def has_embedding(self) -> bool:
        return any(o.name == EMBEDDING for o in self.session.get_outputs())

    def _run(self, texts: list[str], outputs: list[str]) -> list[FloatArray]:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {
            i.name: np.asarray(columns[i.name], dtype=np.int64) for i in self.session.get_inputs()
        }
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(outputs, feeds)]

    def logits(self, texts: list[str]) -> FloatArray:
        return self._run(texts, ["logits"])[0]

    def logits_and_embeddings(
        self, texts: list[str], *, batch: int = 32
    ) -> tuple[FloatArray, FloatArray]:
        """Logits and sentence embeddings (artifacts with an embedding), in input order,
        ``batch`` texts per model call."""
        parts = [self._run(texts[i : i + batch], ["logits", EMBEDDING])
                 for i in range(0, len(texts), batch)]  # fmt: skip
        if not parts:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 0), np.float32)
        return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    def predict_proba(self, texts: list[str], *, batch: int = 64) -> FloatArray:
        """Calibrated probabilities in input order (batched by length: little padding)."""
        return self.predict_with_scope(texts, batch=batch, scope=False)[0]

    def predict_with_scope(
        self, texts: list[str], *, batch: int = 64, scope: bool = True
    ) -> tuple[FloatArray, np.ndarray[Any, np.dtype[np.bool_]]]:
        """Calibrated probabilities and, per input, whether the open-set scorer calls it out
        of scope (always False without a scorer, or with ``scope`` off); input order."""
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        outside = np.zeros(len(texts), dtype=bool)
        scorer = self.open_set if scope else None
        for idx in length_sorted_batches(texts, batch):
            chunk = [texts[i] for i in idx]
            if scorer is None and self.memory is None:
                probs[idx] = calibrated_proba(self.logits(chunk), self.temperature)
                continue
            logits, embeddings = self.logits_and_embeddings(chunk)
            probs[idx] = calibrated_proba(logits, self.temperature)
            if self.memory is not None:
                probs[idx] = self.memory.mix(probs[idx], embeddings)
            if scorer is not None:
                outside[idx] = scorer.out_of_scope(embeddings)
        return probs, outside


@dataclass(frozen=True)
class OpenSetScorer:
    """The artifact's open-set scorer and the in-scope score below which it abstains (None:
    its validation rows could not place one, and it never abstains)."""

    scorer: RelativeMahalanobis
    threshold: float | None

    @property
    def abstains(self) -> bool:
        return self.threshold is not None

    def out_of_scope(self, embeddings: FloatArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
        if self.threshold is None:
            return np.zeros(len(embeddings), dtype=bool)
        return np.asarray(self.scorer.score(embeddings) < self.threshold)


@dataclass(frozen=True)
class ServedMemory:
    """The artifact's retrieval memory and how its vote is mixed into the student's."""

    memory: RetrievalMemory
    k: int
    tau: float
    weight: float

    def mix(self, probs: FloatArray, embeddings: FloatArray) -> FloatArray:
        retrieved = self.memory.label_distribution(embeddings, k=self.k, tau=self.tau)
        return interpolate(probs, retrieved, self.weight)


def load_onnx_student(
    folder: Path,
    *,
    model_file: str = INT8,
    threads: int = 0,
    verified: bool = False,
    model_path: Path | None = None,
    retrieval: bool = False,
) -> OnnxStudent:
    """Load ``model_file`` of a version folder (checksums verified unless ``verified``).

    ``model_path`` loads another ONNX file with the folder's tokenizer and calibration (the
    exporter's candidates, before one is kept), without the extras fitted after export.
    ``retrieval`` mixes in the version's retrieval memory, if it has one (``serving.retrieval``).
    """
    card = json.loads((folder / "card.json").read_text()) if verified else verify(folder)
    if model_path is None and model_file not in card.get("files", {}):
        raise ArtifactIntegrityError(f"{folder.name} has no {model_file}: export it first")
    labels = json.loads((folder / "labels.json").read_text())
    max_length = int(card.get("hyperparameters", {}).get("max_length", 64))
    temperature = float(json.loads((folder / "calibration.json").read_text())["temperature"])
    return OnnxStudent(
        version=folder.name,
        session=_session(model_path or folder / model_file, threads),
        tokenizer=_tokenizer(folder / "tokenizer", max_length),
        labels=labels,
        temperature=temperature,
        max_length=max_length,
        open_set=_open_set(folder, card) if model_path is None else None,
        memory=_memory(folder, card) if model_path is None and retrieval else None,
    )


def _memory(folder: Path, card: dict[str, Any]) -> ServedMemory | None:
    section = card.get("retrieval") or {}
    if MEMORY not in card.get("files", {}) or not section.get("used"):
        return None
    return ServedMemory(
        RetrievalMemory.load(folder / MEMORY), int(section["k"]), float(section["tau"]),
        float(section["weight"]),
    )  # fmt: skip


def _open_set(folder: Path, card: dict[str, Any]) -> OpenSetScorer | None:
    if OPEN_SET not in card.get("files", {}):
        return None  # exported before the open-set scores, or too few rows to fit one
    threshold = (card.get("open_set") or {}).get("threshold")
    return OpenSetScorer(
        RelativeMahalanobis.load(folder / OPEN_SET), None if threshold is None else float(threshold)
    )


def _tokenizer(folder: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    pad = config.get("pad_token", "[PAD]")
    pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else pad
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad) or 0, pad_token=pad)
    return tokenizer
