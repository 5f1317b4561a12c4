"""A registered student as a full-precision torch model: base + adapter, merged.

A QLoRA student's adapter is merged into the base rounded through nf4 as training saw it.

The exporter turns it into ONNX; the serving benchmark and the demo use it as the fp32
reference. The base model folder comes from the model card (``base_model_path``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tutorloop.evaluation.metrics import FloatArray
from tutorloop.infra.batching import length_sorted_batches
from tutorloop.infra.errors import TutorloopError
from tutorloop.registry.store import verify


class ModelLoadError(TutorloopError):
    """A registered model cannot be loaded (missing base folder, corrupt adapter)."""


@dataclass
class TorchStudent:
    model: Any
    tokenizer: Any
    labels: list[str]
    temperature: float
    max_length: int

    def predict_proba(self, texts: list[str], *, batch: int = 64) -> FloatArray:
        """Calibrated probabilities, in input order (batched by length)."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.no_grad():
            for idx in length_sorted_batches(texts, batch):
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                logits = self.model(**enc).logits.float() / self.temperature
                out[idx] = torch.softmax(logits, dim=1).numpy()
        return out


# The modules QLoRA training left unquantized (``trainer.student``'s llm_int8_skip_modules).
_NOT_QUANTIZED = ("classifier", "pooler")


def _as_trained_in_nf4(base: Any) -> None:
    """Round the fp32 base's linear weights through nf4 (blocksize 64, double quantization),
    as QLoRA training saw them: the adapter is then merged into the network it was trained
    on, not into a slightly different fp32 one (train what you serve)."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, torch.nn.Linear) and not any(s in name for s in _NOT_QUANTIZED):
                packed, state = quantize_4bit(
                    module.weight.data.float(), blocksize=64, quant_type="nf4",
                    compress_statistics=True,
                )  # fmt: skip
                module.weight.data = dequantize_4bit(packed, state).to(module.weight.dtype)


def load_torch_student(folder: Path) -> TorchStudent:
    """Verify the folder's checksums, load base + adapter in fp32 and merge them."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    card = verify(folder)
    labels = json.loads((folder / "labels.json").read_text())
    base_path = Path(card["base_model_path"])
    if not (base_path / "config.json").is_file():
        raise ModelLoadError(f"base model folder {base_path} of {folder.name} is missing")
    try:
        base = AutoModelForSequenceClassification.from_pretrained(
            str(base_path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        if card.get("quantization") == "nf4":
            _as_trained_in_nf4(base)
        model = PeftModel.from_pretrained(base, str(folder / "adapter")).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the adapter of {folder.name}: {exc}") from None
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    temperature = float(json.loads((folder / "calibration.json").read_text())["temperature"])
    max_length = int(card.get("hyperparameters", {}).get("max_length", 64))
    return TorchStudent(model, tokenizer, labels, temperature, max_length)
