"""DP-SGD over the private rows of a dataset: what the trainer needs from opacus.

Noise is added once per *logical* batch, so DP-SGD learns with large expected batches
(``privacy.dp_batch_size``, Poisson-sampled as the accountant assumes) and few steps; each
logical batch is computed in physical batches of ``trainer.batch_size`` rows (opacus'
``BatchMemoryManager``), so memory stays what non-private training uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
from tutorloop.privacy.dp import PrivateTraining, default_delta, make_private
from tutorloop.privacy.dp_plan import logical_batch
from tutorloop.trainer.splits import TokenizedSplit, pad
from tutorloop.trainer.student import param_groups

Batch = tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def dp_optimizer(model: Any, privacy: PrivacySettings) -> torch.optim.Optimizer:
    """AdamW over what DP-SGD trains (the adapters and the head), at its own learning
    rates."""
    groups = param_groups(
        model, adapter_lr=privacy.dp_learning_rate, head_lr=privacy.dp_head_learning_rate
    )
    if privacy.dp_optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.AdamW(groups)


def private_training(
    model: Any,
    train: TokenizedSplit,
    tokenizer: Any,
    cfg: TrainerSettings,
    privacy: PrivacySettings,
) -> PrivateTraining:
    """Wrap ``model`` for DP-SGD over ``train`` (the private rows) to ``privacy.dp_epsilon``."""
    assert privacy.dp_epsilon is not None
    # Opacus samples rows independently (Poisson), so rows are padded to one length.
    enc = pad(tokenizer, train.input_ids, cfg.max_length)
    data = TensorDataset(
        enc["input_ids"], enc["attention_mask"], train.labels, train.soft, train.weights,
        train.has_soft,
    )  # fmt: skip
    loader = DataLoader(data, batch_size=logical_batch(privacy, len(train)), shuffle=True)
    return make_private(
        model, dp_optimizer(model, privacy), loader,
        epsilon=privacy.dp_epsilon, delta=privacy.dp_delta or default_delta(len(train)),
        epochs=privacy.dp_epochs, max_grad_norm=privacy.dp_max_grad_norm,
    )  # fmt: skip


def physical_batches(private: PrivateTraining, physical: int) -> Iterator[Batch]:
    """One epoch of Poisson-sampled logical batches, in physical batches of ``physical``.

    The optimizer steps (and adds noise) only at the end of each logical batch:
    :func:`stepped` tells the caller whether the last ``step()`` did."""
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    with BatchMemoryManager(
        data_loader=private.data_loader,
        max_physical_batch_size=physical,
        optimizer=private.optimizer,
    ) as loader:
        for input_ids, mask, labels, soft, weights, has_soft in loader:
            # An empty logical batch (Poisson) has probability (1 - q)^n: negligible at the
            # sizes DP can learn at; the model cannot run on zero rows.
            if len(labels) == 0:
                continue
            # Rows are padded to one length for sampling; the batch needs only its longest.
            # Trailing padding changes no output (it is masked), only the compute.
            width = int(mask.sum(dim=1).max())
            enc = {"input_ids": input_ids[:, :width], "attention_mask": mask[:, :width]}
            yield enc, labels, soft, weights, has_soft


def stepped(optimizer: Any) -> bool:
    """False when the last ``optimizer.step()`` only accumulated a physical batch (opacus
    exposes this as a private flag of its DP optimizer; a plain optimizer always steps)."""
    return not getattr(optimizer, "_is_last_step_skipped", False)
