"""The student's outputs for tokenized texts outside training: logits and sentence embeddings."""

from __future__ import annotations

from typing import Any

import torch

from tutorloop.infra.batching import length_sorted_batches
from tutorloop.trainer.splits import pad


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last hidden layer averaged over real (unmasked) tokens: the sentence embedding."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def predict_logits(
    model: Any, tokenizer: Any, ids: list[list[int]], batch: int = 64
) -> torch.Tensor:
    """Logits for tokenized texts, batched by length (little padding), in input order."""
    return _predict(model, tokenizer, ids, batch, pool=False)[0]


def predict_logits_and_embeddings(
    model: Any, tokenizer: Any, ids: list[list[int]], batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and sentence embeddings (the last hidden layer mean-pooled over real tokens,
    what the open-set scores read) for tokenized texts, in input order."""
    logits, pooled = _predict(model, tokenizer, ids, batch, pool=True)
    return logits, pooled


def predict_logits_and_inputs_of(
    model: Any, tokenizer: Any, ids: list[list[int]], module: torch.nn.Module, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and what ``module`` (a layer of ``model``, e.g. its classification head) reads
    as input, for tokenized texts, in input order."""
    logits, inputs = _predict(model, tokenizer, ids, batch, pool=False, capture=module)
    return logits, inputs


def _predict(
    model: Any, tokenizer: Any, ids: list[list[int]], batch: int, *, pool: bool,
    capture: torch.nn.Module | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """The logits and, with ``pool``, the mean-pooled embeddings, and with ``capture`` that
    module's input, rows in input order; the hidden states are kept only when pooled
    (training's validation passes do not need them)."""
    if not ids:
        return [torch.zeros(0)] * (1 + pool + (capture is not None))
    seen: list[torch.Tensor] = []
    hook = (
        capture.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
        if capture is not None else None
    )  # fmt: skip
    rows: dict[int, list[torch.Tensor]] = {}
    model.eval()
    # no_grad, not inference_mode: bitsandbytes 4-bit layers keep tensors created here, and
    # inference tensors then break the next training step.
    try:
        with torch.no_grad():
            for idx in length_sorted_batches(ids, batch):
                enc = pad(tokenizer, [ids[i] for i in idx])
                out = model(**enc, output_hidden_states=pool)
                outputs = [out.logits.float()]
                if pool:
                    outputs.append(
                        mean_pooled(out.hidden_states[-1].float(), enc["attention_mask"])
                    )
                if capture is not None:
                    outputs.append(seen.pop().float())
                for row, i in enumerate(idx):
                    rows[i] = [output[row] for output in outputs]
    finally:
        if hook is not None:
            hook.remove()
    return [torch.stack([rows[i][k] for i in range(len(ids))]) for k in range(len(rows[0]))]
