"""Sentence embeddings from a Hugging Face encoder folder: mean pooling, L2-normalized.

That is how all-mpnet-base-v2 and all-MiniLM-L6-v2 were trained to be used (their
sentence-transformers configs say mean pooling + normalize), so plain ``transformers`` does
the job without another dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from tutorloop.evaluation.metrics import FloatArray
from tutorloop.infra.batching import length_sorted_batches


class Encoder:
    """Embeds texts in length-sorted batches (little padding) and returns them in input order."""

    def __init__(self, folder: Path, *, max_length: int = 128, batch_size: int = 64) -> None:
        self.folder = folder
        self.max_length = max_length
        self.batch_size = batch_size
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model = AutoModel.from_pretrained(str(folder))
        self._model.eval()

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    def encode(
        self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> FloatArray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_sorted_batches(texts, self.batch_size):
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.numpy()
                if on_batch is not None:
                    on_batch(len(idx))
        return out
