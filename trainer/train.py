"""One distillation training run of the student on a dataset version.

The loss is :func:`tutorloop.trainer.distillation.distillation_loss`. AdamW with separate
learning rates for the head and the adapters, linear warmup then cosine decay, gradient norm
clipped, batches of similar-length rows (``group_by_length``) padded to their longest text,
validation loss checked ``evals_per_epoch``
times per epoch with early stopping (the best weights are restored). Afterwards a temperature
is fit on the validation logits (calibration) and saved with the adapter.

With DP-SGD (``privacy.dp_epsilon``) epsilon is spent on the private rows only (those derived
from production users; imported seed and evaluation rows are public). Public training rows are
trained on first, without noise; then DP-SGD runs over the private rows (:mod:`dp_phase`:
Poisson-sampled logical batches, its own epochs and learning rates). Model selection and
calibration use public validation rows only (choosing by private rows would spend privacy the
accountant does not count), so private validation rows are trained on instead. The run
returns its privacy accounting, which the cycle writes to the ledger.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from transformers import get_cosine_schedule_with_warmup

from tutorloop.evaluation.calibration import fit_temperature
from tutorloop.evaluation.metrics import quality
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
from tutorloop.infra.tables import Split
from tutorloop.privacy.dp import LedgerEntry, PrivateTraining, account, assert_adapters_changed
from tutorloop.privacy.dp_plan import DPPlan, logical_batch, plan
from tutorloop.trainer.distillation import distillation_loss
from tutorloop.trainer.dp_head import HeadRun, train_dp_head
from tutorloop.trainer.dp_phase import (
    Batch,
    physical_batches,
    private_training,
    stepped,
)
from tutorloop.trainer.inference import predict_logits
from tutorloop.trainer.representation import (
    Hint,
    RepresentationTargets,
    forward_with_embedding,
    hint_for,
)
from tutorloop.trainer.splits import TokenizedSplit, pad, tokenized_split, training_batches
from tutorloop.trainer.student import Student, param_groups


class TrainingError(TutorloopError):
    """The run cannot train on this input."""


@dataclass(frozen=True)
class DPRequest:
    """Train with DP-SGD to ``settings.dp_epsilon``; ``run_id`` names the accounting."""

    settings: PrivacySettings
    run_id: str


@dataclass
class TrainOutcome:
    temperature: float
    metrics: dict[str, Any]
    steps: int
    epochs_run: float
    stopped_early: bool
    privacy: LedgerEntry | None = None  # DP runs: what the ledger must record
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def epsilon(self) -> float | None:
        return self.privacy.epsilon if self.privacy is not None else None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss_on(model: Any, tokenizer: Any, split: TokenizedSplit, cfg: TrainerSettings) -> float:
    logits = predict_logits(model, tokenizer, split.input_ids)
    return float(
        distillation_loss(
            logits, split.labels, split.soft, split.weights, split.has_soft,
            temperature=cfg.distill_temperature, alpha=cfg.distill_alpha,
        )
    )  # fmt: skip


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: Any, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])


def _optimizer(model: Any, cfg: TrainerSettings) -> Any:
    # The head starts from random weights and is trained in full: it needs a far larger step
    # than the low-rank adapters (measured on 10 examples x 77 labels, 8 epochs: 0.77 test
    # accuracy with 2e-2 for the head and 2e-4 for the adapters; 0.08 with 2e-4 for both).
    return torch.optim.AdamW(
        param_groups(model, adapter_lr=cfg.learning_rate, head_lr=cfg.head_learning_rate)
    )


@dataclass
class _EarlyStopping:
    """Validation loss every ``every`` steps; the best trainable weights are kept."""

    patience: int
    every: int
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def should_stop(self, model: Any, step: int, train_loss: float, val_loss: float) -> bool:
        self.history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.best_state, self.bad_evals = val_loss, _trainable(model), 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.patience


@dataclass
class _Run:
    """One training phase's moving parts, so that the step loop reads as the algorithm."""

    model: Any
    tokenizer: Any
    cfg: TrainerSettings
    train: TokenizedSplit
    validation: TokenizedSplit
    optimizer: Any
    scheduler: Any
    total: int
    stopping: _EarlyStopping
    private: PrivateTraining | None = None  # the DP phase: opacus' objects
    hint: Hint | None = None  # representation distillation, when on
    step: int = 0
    stopped: bool = False  # early stopping ended the phase

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Batch, list[int]]]:
        """Batches with the training rows they hold (unknown, [], in a DP phase)."""
        if self.private is not None:
            return ((batch, []) for batch in physical_batches(self.private, self.cfg.batch_size))
        return (
            (_dynamic_batch(self.train, idx, self.tokenizer), idx)
            for idx in training_batches(
                self.train, self.cfg.batch_size, generator, self.cfg.group_by_length
            )
        )

    def epoch(self, generator: torch.Generator, on_step: Callable[[int], None] | None) -> bool:
        """One pass over the training rows; True when early stopping ended the phase."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        for (enc, labels, soft, weights, has_soft), rows in self.batches(generator):
            self.model.train()
            self.optimizer.zero_grad()
            if self.hint is not None:
                logits, pooled = forward_with_embedding(self.model, enc)
            else:
                logits = self.model(**enc).logits.float()
            loss = distillation_loss(
                logits, labels, soft, weights, has_soft,
                temperature=self.cfg.distill_temperature, alpha=self.cfg.distill_alpha,
            )  # fmt: skip
            if self.hint is not None:
                loss = loss + self.hint.loss(pooled, rows)
            loss.backward()  # type: ignore[no-untyped-call]
            if self.private is None:  # DP-SGD clips per example itself
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            self.optimizer.step()
            if not stepped(self.optimizer):
                continue  # a physical part of a DP logical batch: gradients accumulate
            self.scheduler.step()
            self.step += 1
            if on_step is not None:
                on_step(1)
            due = self.step % self.stopping.every == 0 or self.step == self.total
            if len(self.validation) and due:
                val_loss = _loss_on(self.model, self.tokenizer, self.validation, self.cfg)
                if self.stopping.should_stop(self.model, self.step, loss.item(), val_loss):
                    return True
        return False


@dataclass
class _Phase:
    """Rows trained on together: the public ones without noise, or the private ones under DP."""

    train: TokenizedSplit
    epochs: int
    dp: PrivacySettings | None = None  # the DP phase: wrapped for DP-SGD when it starts
    private: PrivateTraining | None = None
    head_plan: DPPlan | None = None  # head-only DP: its plan (the steps are its epochs)

    def steps_per_epoch(self, cfg: TrainerSettings) -> int:
        if self.private is not None:
            return len(self.private.data_loader)  # logical batches per epoch
        if self.head_plan is not None:
            return 1  # head-only DP: every step is a pass over every private row
        if self.dp is not None:
            return math.ceil(len(self.train) / logical_batch(self.dp, len(self.train)))
        return math.ceil(len(self.train) / cfg.batch_size)


def _phases(
    dataset: Any, tokenizer: Any, cfg: TrainerSettings, epochs: int, dp: DPRequest | None,
    representation: RepresentationTargets | None,
) -> tuple[list[_Phase], TokenizedSplit]:  # fmt: skip
    """What to train on, in order, and the validation rows that may choose between weights.

    Teacher embeddings are fetched for the noise-free phase only: the DP phase does not
    train the projection (opacus would need per-example gradients for it too)."""
    embed = representation.teacher_embeddings if representation is not None else None
    if dp is None:
        train = tokenized_split(dataset, Split.TRAIN, tokenizer, cfg, embed=embed)
        return [_Phase(train, epochs)], tokenized_split(dataset, Split.VALIDATION, tokenizer, cfg)
    public = tokenized_split(dataset, Split.TRAIN, tokenizer, cfg, private=False, embed=embed)
    private = tokenized_split(dataset, Split.TRAIN, tokenizer, cfg, private=True)
    private += tokenized_split(dataset, Split.VALIDATION, tokenizer, cfg, private=True)
    validation = tokenized_split(dataset, Split.VALIDATION, tokenizer, cfg, private=False)
    phases = [_Phase(public, epochs)] if len(public) else []
    if len(private):
        if dp.settings.dp_adapters:
            phases.append(_Phase(private, dp.settings.dp_epochs, dp.settings))
        else:
            found = plan(len(private), dp.settings)
            phases.append(_Phase(private, found.steps, dp.settings, head_plan=found))
    return phases, validation


def _run_phase(
    model: Any, tokenizer: Any, cfg: TrainerSettings, phase: _Phase,
    validation: TokenizedSplit, on_step: Callable[[int], None] | None,
    representation: RepresentationTargets | None = None,
) -> _Run:  # fmt: skip
    if phase.dp is not None:
        # Wrapped only now: opacus' hooks on the model would break the noise-free phase.
        model.train()  # opacus refuses a model in eval mode (the last validation left it so)
        phase.private = private_training(model, phase.train, tokenizer, cfg, phase.dp)
    per_epoch = phase.steps_per_epoch(cfg)
    total = per_epoch * phase.epochs
    optimizer = phase.private.optimizer if phase.private else _optimizer(model, cfg)
    hint = hint_for(model, tokenizer, phase.train, representation) if phase.dp is None else None
    if hint is not None:  # trained with the head, from its least-squares start
        optimizer.add_param_group(
            {"params": list(hint.projection.parameters()), "lr": cfg.head_learning_rate}
        )
    stopping = _EarlyStopping(cfg.patience, max(1, per_epoch // cfg.evals_per_epoch),
                              best_state=_trainable(model))  # fmt: skip
    if phase.private is not None:
        # DP-SGD's validation loss is noisy early on: run every step the accountant paid
        # for, and keep the best public-validation weights, the phase's start included
        # (noise that only hurt leaves the model as it was).
        stopping.patience = 10**9
        if len(validation):
            stopping.best_loss = _loss_on(model, tokenizer, validation, cfg)
    run = _Run(
        model, tokenizer, cfg, phase.train, validation, optimizer,
        get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total),
        total, stopping, phase.private, hint,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.seed)
    # ``any`` stops at the first epoch that early-stopped.
    run.stopped = any(run.epoch(generator, on_step) for _ in range(phase.epochs))
    return run


def train_student(
    student: Student,
    dataset: Any,
    cfg: TrainerSettings,
    *,
    dp: DPRequest | None = None,
    on_step: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    epochs: int | None = None,
    representation: RepresentationTargets | None = None,
) -> TrainOutcome:
    """Train ``student`` in place on ``dataset`` (a saved dataset version) and calibrate it.

    With ``dp``, the private rows are trained with DP-SGD and the outcome carries the run's
    privacy accounting (None when the dataset has no private rows: nothing was spent);
    writing it to the ledger is the caller's job (the cycle), not training's. With
    ``representation`` (and a weight above 0) the noise-free phase also distils the teacher's
    embeddings (:mod:`representation`).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    model, tokenizer = student.model, student.tokenizer
    phases, validation = _phases(dataset, tokenizer, cfg, epochs or cfg.epochs, dp, representation)
    if not any(len(phase.train) for phase in phases):
        raise TrainingError("the dataset has no training rows")
    if on_total is not None:
        on_total(sum(phase.steps_per_epoch(cfg) * phase.epochs for phase in phases))
    steps = 0
    stopped = False
    epochs_run = 0.0
    history: list[dict[str, float]] = []
    spend = None
    best = math.inf
    representation_losses: dict[str, float] | None = None
    head_card: dict[str, Any] | None = None
    for phase in phases:
        if phase.head_plan is not None and dp is not None:
            head = _head_phase(model, tokenizer, cfg, phases, phase, validation, dp, on_step)
            spend, head_card = account(head.private, dp.run_id), head.card()
            steps += head.steps
            continue
        snapshot = _trainable(model) if phase.dp is not None else None
        run = _run_phase(model, tokenizer, cfg, phase, validation, on_step, representation)
        if snapshot is not None and phase.private is not None and dp is not None:
            assert_adapters_changed(snapshot, model)  # before choosing weights by validation
            spend = account(phase.private, dp.run_id)
        if len(validation):
            _restore(model, run.stopping.best_state)
        steps += run.step
        epochs_run += run.step / max(1, phase.steps_per_epoch(cfg))
        stopped = stopped or run.stopped
        history += run.stopping.history
        if run.hint is not None:
            representation_losses = run.hint.measured(model, tokenizer, phase.train.input_ids)
        best = min(best, run.stopping.best_loss)
    gold = tokenized_split(dataset, Split.EVAL, tokenizer, cfg)
    temperature, metrics = _calibrate_and_measure(model, tokenizer, validation, gold)
    metrics["best_val_loss"] = best if math.isfinite(best) else None
    if representation_losses is not None:
        metrics["representation_loss"] = representation_losses
    if head_card is not None:
        metrics["dp_head"] = head_card
    return TrainOutcome(
        temperature=temperature, metrics=metrics, steps=steps, epochs_run=round(epochs_run, 2),
        stopped_early=stopped, privacy=spend, history=history,
    )  # fmt: skip


def _head_phase(
    model: Any, tokenizer: Any, cfg: TrainerSettings, phases: list[_Phase], private: _Phase,
    validation: TokenizedSplit, dp: DPRequest, on_step: Callable[[int], None] | None,
) -> HeadRun:  # fmt: skip
    """Head-only DP over the private phase's rows, whitened by the public ones."""
    assert private.head_plan is not None
    public = [phase.train for phase in phases if phase.dp is None]
    splits = (public[0] if public else None, private.train, validation)
    return train_dp_head(model, tokenizer, splits, cfg, dp.settings, private.head_plan, on_step)


def _dynamic_batch(split: TokenizedSplit, idx: list[int], tokenizer: Any) -> Batch:
    enc = pad(tokenizer, [split.input_ids[i] for i in idx])
    return enc, split.labels[idx], split.soft[idx], split.weights[idx], split.has_soft[idx]


def _calibrate_and_measure(
    model: Any, tokenizer: Any, validation: TokenizedSplit, gold: TokenizedSplit
) -> tuple[float, dict[str, Any]]:
    metrics: dict[str, Any] = {}
    temperature = 1.0
    if len(validation):
        logits = predict_logits(model, tokenizer, validation.input_ids)
        temperature = fit_temperature(logits.numpy(), validation.labels.numpy())
        targets = validation.labels.numpy()
        metrics["validation"] = quality(F.softmax(logits, dim=1).numpy(), targets).to_dict()
        metrics["validation_calibrated"] = quality(
            F.softmax(logits / temperature, dim=1).numpy(), targets
        ).to_dict()
    if len(gold):
        logits = predict_logits(model, tokenizer, gold.input_ids)
        metrics["eval"] = quality(
            F.softmax(logits / temperature, dim=1).numpy(), gold.labels.numpy()
        ).to_dict()
    metrics["temperature"] = temperature
    return temperature, metrics
