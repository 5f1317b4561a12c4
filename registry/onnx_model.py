"""A registered student served by ONNX Runtime: the int8 model, its tokenizer and temperature.

Loading verifies the version folder's checksums first: a tampered or missing file is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.metrics import FloatArray
from registry.store import ArtifactIntegrityError, verify

INT8 = "model_int8.onnx"
FP32 = "model_fp32.onnx"


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxStudent:
    version: str
    session: Any
    tokenizer: Any
    labels: list[str]
    temperature: float
    max_length: int

    def logits(self, texts: list[str]) -> FloatArray:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feeds = {i.name: enc[i.name].astype(np.int64) for i in self.session.get_inputs()}
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)

    def predict_proba(self, texts: list[str], *, batch: int = 64) -> FloatArray:
        """Calibrated probabilities in input order (batched by length: little padding)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            logits = self.logits([texts[i] for i in idx]) / self.temperature
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            out[idx] = exp / exp.sum(axis=1, keepdims=True)
        return out


def load_onnx_student(
    folder: Path, *, model_file: str = INT8, threads: int = 0, verified: bool = False
) -> OnnxStudent:
    """Load ``model_file`` of a version folder (checksums verified unless ``verified``)."""
    from transformers import AutoTokenizer

    card = json.loads((folder / "card.json").read_text()) if verified else verify(folder)
    if model_file not in card.get("files", {}):
        raise ArtifactIntegrityError(f"{folder.name} has no {model_file}: export it first")
    labels = json.loads((folder / "labels.json").read_text())
    temperature = float(json.loads((folder / "calibration.json").read_text())["temperature"])
    return OnnxStudent(
        version=folder.name,
        session=_session(folder / model_file, threads),
        tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer")),
        labels=labels,
        temperature=temperature,
        max_length=int(card.get("hyperparameters", {}).get("max_length", 64)),
    )
