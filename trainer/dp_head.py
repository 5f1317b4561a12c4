"""Head-only DP: full-batch DP gradient descent on the classification head (issue #19).

DP-SGD over the LoRA adapters and the head (``privacy.dp_adapters = true``) measured no gain
on Banking77 at any epsilon: the noise, spread over ~0.7 M parameters, drowned what the private
rows taught (BENCHMARKS.md). A linear head on the frozen student's features, fitted without DP
on the same rows, recovers most of that gain, and has 50x fewer parameters to noise. So:

1. the encoder stays as the public phase left it; the head's input features (what the
   classifier reads) are computed once for the public and the private rows;
2. the features are whitened with the *public* rows' mean and covariance (Ledoit-Wolf
   shrunk): plain gradient descent on raw features crawls along their low-variance
   directions, and whitening costs no privacy;
3. a residual head (zero at the start) on the whitened features, added to the student's
   logits, trains with opacus at a sample rate of 1 (every private row in every step, the
   noise averaged over all of them), the step count from :func:`privacy.dp_plan.plan`;
4. each step adds the public training rows' exact mean-loss gradient (weighted by
   ``privacy.dp_head_public_weight``) to the private rows' noised one: public data costs no
   privacy, and it keeps the residual from undoing what the public rows taught;
5. the residual is scaled by the factor in :data:`SCALES` with the lowest public-validation
   loss (0: the run learned nothing worth keeping), which is post-processing of the private
   result and costs no privacy, then folded into the classifier's weights: the served model
   does not change shape.

Public rows never enter the DP sample or its noise: only ``private`` is wrapped by opacus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
from tutorloop.privacy.dp import AdapterUnchangedError, PrivateTraining, make_private
from tutorloop.privacy.dp_plan import DPPlan
from tutorloop.trainer.distillation import distillation_loss
from tutorloop.trainer.inference import predict_logits_and_inputs_of
from tutorloop.trainer.splits import TokenizedSplit

#: The residual's scales compared on the public validation rows.
SCALES = (0.0, 0.25, 0.5, 1.0)


@dataclass
class HeadRun:
    """A finished head-only DP run: opacus' objects (for the ledger) and what it chose."""

    private: PrivateTraining
    steps: int
    scale: float
    validation_loss: dict[float, float] = field(default_factory=dict)
    # Public-validation accuracy without the DP residual and with the chosen scale of it: what
    # DP measurably added (the utility it kept), at no further privacy cost.
    validation_accuracy: tuple[float, float] | None = None
    public_rows: int = 0  # rows the whitening was estimated on
    public_rows_in_steps: int = 0  # public training rows whose exact gradient joined each step

    def card(self) -> dict[str, Any]:
        return {
            "method": "head", "steps": self.steps, "scale": self.scale,
            "validation_loss_by_scale": {str(k): round(v, 4) for k, v in
                                         self.validation_loss.items()},
            "validation_accuracy_before": self.validation_accuracy[0]
            if self.validation_accuracy else None,
            "validation_accuracy_after": self.validation_accuracy[1]
            if self.validation_accuracy else None,
            "whitened_on_public_rows": self.public_rows,
            "public_rows_in_steps": self.public_rows_in_steps,
        }  # fmt: skip


def classifier_head(model: Any) -> torch.nn.Linear:
    """The trainable linear layer that produces the logits (peft's copy of the classifier)."""
    labels = int(model.config.num_labels)
    heads = [
        module for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features == labels
        and "lora_" not in name and module.weight.requires_grad
    ]  # fmt: skip
    if not heads:
        raise ValueError("no trainable linear classification head found")
    return heads[-1]


def head_inputs(model: Any, tokenizer: Any, ids: list[list[int]]) -> tuple[torch.Tensor, ...]:
    """The head's input features and the logits for tokenized texts, in input order."""
    logits, features = predict_logits_and_inputs_of(model, tokenizer, ids, classifier_head(model))
    return features, logits


def whitening(public: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, matrix) with ``(x - mean) @ matrix`` of about unit variance on the public rows;
    with fewer than two public rows, no whitening (zero mean, the identity).

    The covariance is Ledoit-Wolf shrunk: with fewer public rows than feature dimensions the
    sample covariance is singular, and whitening by it would blow up every direction the
    public rows do not vary in (the private rows do)."""
    from sklearn.covariance import LedoitWolf

    dim = public.shape[1]
    if len(public) < 2:
        return torch.zeros(dim), torch.eye(dim)
    mean = public.mean(0)
    shrunk = LedoitWolf(assume_centered=True).fit((public - mean).double().numpy()).covariance_
    values, vectors = torch.linalg.eigh(torch.from_numpy(shrunk).float())
    return mean, vectors / torch.sqrt(values.clamp(min=1e-6 * float(values.max())))


class _Residual(torch.nn.Module):
    """Logits plus a linear map of the whitened features, zero at the start."""

    def __init__(self, dim: int, labels: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, labels)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        extra: torch.Tensor = self.linear(features)
        return logits + extra


def train_dp_head(
    model: Any, tokenizer: Any,
    splits: tuple[TokenizedSplit | None, TokenizedSplit, TokenizedSplit],
    cfg: TrainerSettings, privacy: PrivacySettings, dp_plan: DPPlan,
    on_step: Callable[[int], None] | None = None,
) -> HeadRun:  # fmt: skip
    """Train the head of ``model`` in place on the private split under DP (see the module);
    ``splits`` are (public training rows or None, private rows, public validation rows);
    the whitening is estimated on both kinds of public rows."""
    public, private, validation = splits
    features, logits = head_inputs(model, tokenizer, private.input_ids)
    checked = head_inputs(model, tokenizer, validation.input_ids)
    whiten_on = [features[:0]]  # empty rows of the right width, when nothing is public
    known: tuple[torch.Tensor, ...] | None = None  # the public training rows' head inputs
    if public is not None and len(public):
        known = head_inputs(model, tokenizer, public.input_ids)
        whiten_on.append(known[0])
    if len(validation):
        whiten_on.append(checked[0])
    mean, matrix = whitening(torch.cat(whiten_on))
    residual = _Residual(features.shape[1], logits.shape[1])
    data = TensorDataset(
        (features - mean) @ matrix, logits, private.labels, private.soft, private.weights,
        private.has_soft,
    )  # fmt: skip
    wrapped = make_private(
        residual, torch.optim.SGD(residual.parameters(), lr=privacy.dp_head_step_size),
        DataLoader(data, batch_size=len(data)), epsilon=dp_plan.epsilon, delta=dp_plan.delta,
        epochs=dp_plan.steps, max_grad_norm=dp_plan.max_grad_norm,
    )  # fmt: skip
    exact = None
    if known is not None and public is not None and privacy.dp_head_public_weight > 0:
        exact = _PublicTerm((known[0] - mean) @ matrix, known[1], public, cfg,
                            privacy.dp_head_public_weight)  # fmt: skip
    for _ in range(dp_plan.steps):
        for x, base, labels, soft, weights, has_soft in wrapped.data_loader:  # one batch
            wrapped.optimizer.zero_grad()
            rows = TokenizedSplit([], labels, soft, weights, has_soft)
            loss = _loss(wrapped.model(x, base), rows, cfg)
            loss.backward()  # type: ignore[no-untyped-call]
            # pre_step clips, noises and averages the private rows' gradients; the public
            # rows' exact gradient is added after it, outside opacus' sample and noise.
            if wrapped.optimizer.pre_step():
                if exact is not None:
                    exact.add_gradient(residual.linear)
                wrapped.optimizer.original_optimizer.step()
        if on_step is not None:
            on_step(1)
    weight = residual.linear.weight.detach()
    bias = residual.linear.bias.detach()
    if not torch.any(weight != 0):  # the opacus self-check, as for the adapters
        raise AdapterUnchangedError("head-only DP left the residual head at zero")
    scale, losses, accuracy = _choose_scale(validation, checked, cfg, (mean, matrix), residual)
    head = classifier_head(model)
    with torch.no_grad():  # logits + s (W_r ((h - m) M) + b_r), folded into the head
        head.weight.add_(scale * weight @ matrix.T)
        head.bias.add_(scale * (bias - (mean @ matrix) @ weight.T))
    public_rows = sum(len(rows) for rows in (public, validation) if rows is not None)
    in_steps = len(exact.rows) if exact is not None else 0
    return HeadRun(wrapped, dp_plan.steps, scale, losses, accuracy, public_rows, in_steps)


@dataclass
class _PublicTerm:
    """The public training rows' mean loss, weighted, as a noise-free part of each DP step:
    in the sweep on cached features it kept the residual from trading the public rows' fit
    for the private rows' noisy gradient (+2 points at eps 8, BENCHMARKS.md)."""

    features: torch.Tensor  # whitened
    logits: torch.Tensor
    rows: TokenizedSplit
    cfg: TrainerSettings
    weight: float

    def add_gradient(self, linear: torch.nn.Linear) -> None:
        # functional, not ``linear(...)``: a module call would run opacus' per-sample hooks
        # and put the public rows into the private gradient samples.
        extra = torch.nn.functional.linear(self.features, linear.weight, linear.bias)
        loss = self.weight * _loss(self.logits + extra, self.rows, self.cfg)
        grads = torch.autograd.grad(loss, [linear.weight, linear.bias])
        for parameter, grad in zip((linear.weight, linear.bias), grads, strict=True):
            assert parameter.grad is not None  # set by pre_step
            parameter.grad.add_(grad)


def _choose_scale(
    validation: TokenizedSplit, checked: tuple[torch.Tensor, ...], cfg: TrainerSettings,
    white: tuple[torch.Tensor, torch.Tensor], residual: _Residual,
) -> tuple[float, dict[float, float], tuple[float, float] | None]:  # fmt: skip
    """The scale of the residual with the lowest loss on the public validation rows (their
    head inputs and logits: ``checked``; the whole residual when there are none), the
    losses, and the accuracy before and after."""
    if not len(validation):
        return 1.0, {}, None
    features, logits = checked
    with torch.no_grad():
        extra = residual.linear((features - white[0]) @ white[1])
        losses = {scale: float(_loss(logits + scale * extra, validation, cfg)) for scale in SCALES}
        scale = min(losses, key=lambda s: (losses[s], -s))
        right = [
            float((found.argmax(1) == validation.labels).float().mean())
            for found in (logits, logits + scale * extra)
        ]
    return scale, losses, (round(right[0], 4), round(right[1], 4))


def _loss(logits: torch.Tensor, rows: TokenizedSplit, cfg: TrainerSettings) -> torch.Tensor:
    return distillation_loss(
        logits, rows.labels, rows.soft, rows.weights, rows.has_soft,
        temperature=cfg.distill_temperature, alpha=cfg.distill_alpha,
    )  # fmt: skip
