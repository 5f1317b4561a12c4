"""The distillation loss: match the teacher's softened distribution, and the hard label.

Per row with a teacher distribution: ``alpha`` x T^2 x KL(teacher_T || student_T) +
(1 - ``alpha``) x cross-entropy on the hard label, where ``_T`` is the distribution softened by
temperature T (the teacher gives probabilities, so its tempered distribution is p^(1/T),
renormalised; Hinton et al. 2015). Rows with a human label only have no distribution to match:
plain cross-entropy (a KL to a one-hot at T > 1 only asks for ever larger logits). Rows whose
hard label is human weigh ``human_weight`` times more (``weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft: torch.Tensor,
    weights: torch.Tensor,
    has_soft: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Weighted mean over the batch of alpha x T^2 x KL + (1 - alpha) x CE, or CE alone for
    rows without a teacher distribution (see the module)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    tempered = soft.clamp(min=1e-8).pow(1.0 / temperature)
    tempered = tempered / tempered.sum(dim=1, keepdim=True)
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = (tempered * (tempered.log() - log_student)).sum(dim=1) * temperature**2
    mix = alpha * has_soft
    per_row = mix * kl + (1 - mix) * ce
    return (weights * per_row).sum() / weights.numel()
