"""Representation distillation: pull the student's sentence embedding toward the teacher's.

Response distillation (:mod:`distillation`) teaches the student what the teacher answers;
this auxiliary term teaches it how the teacher sees the text. The student's embedding (its
last hidden layer mean-pooled over real tokens, what serving's open-set scores read) goes
through a learned linear projection to the teacher's width, and the loss is one minus the
cosine similarity to the teacher's embedding of the same text, averaged over the batch
(FitNets-style hint learning, Romero et al. 2015, with the cosine of sentence-embedding
distillation, Reimers & Gurevych 2020). The projection is trained with the head and thrown
away afterwards: the served student does not change shape.

The projection starts at the least-squares map from the student's current embeddings to the
teacher's on the training rows, so the first steps pull in a direction that means something
(a random projection would first spend the encoder's gradient on its own noise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from tutorloop.infra.settings import Settings
from tutorloop.labeling.embeddings_openai import EmbeddingsUnavailableError
from tutorloop.labeling.teacher_local import TeacherNotFittedError
from tutorloop.labeling.teachers import teacher_embedder
from tutorloop.trainer.inference import mean_pooled, predict_logits_and_embeddings
from tutorloop.trainer.splits import TokenizedSplit

#: Texts -> one L2-normalized teacher embedding per text, rows in input order.
TextEmbedder = Callable[[Sequence[str]], np.ndarray]

log = logging.getLogger(__name__)


class RepresentationTargets:
    """Where the teacher's embeddings come from (``source``, for the model card) and how much
    their term weighs against the distillation loss (``trainer.representation_weight``).

    An endpoint that cannot embed turns the term off for the run instead of failing it: the
    run trains as it would with the weight at 0, and ``off_reason`` says why."""

    def __init__(
        self, embed: TextEmbedder, weight: float, source: str, kind: str = "cosine"
    ) -> None:
        self._embed = embed
        self.weight = weight
        self.kind = kind
        self.source = source
        self.off_reason: str | None = None

    def teacher_embeddings(self, texts: Sequence[str]) -> np.ndarray | None:
        try:
            return self._embed(texts)
        except EmbeddingsUnavailableError as exc:
            self.off_reason = str(exc)
            log.warning("representation distillation off for this run: %s", exc)
            return None

    def card(self) -> dict[str, Any]:
        return {"weight": self.weight, "loss": self.kind, "source": self.source,
                "off_reason": self.off_reason}  # fmt: skip


def representation_targets(settings: Settings) -> RepresentationTargets | None:
    """The configured teacher's embeddings at ``trainer.representation_weight``; None when the
    weight is 0, or (with a warning) when the local teacher is not fitted yet (the first
    student is trained before the teacher in a fresh deployment)."""
    weight = settings.trainer.representation_weight
    if weight == 0:
        return None
    try:
        embed, source = teacher_embedder(settings)
    except TeacherNotFittedError as exc:
        log.warning("representation distillation off for this run: %s", exc)
        return None
    return RepresentationTargets(embed, weight, source, settings.trainer.representation_loss)


def fitted_projection(student: torch.Tensor, teacher: torch.Tensor) -> torch.nn.Linear:
    """A linear map student width -> teacher width, initialized by ridge regression of the
    teacher's embeddings on the student's (both given row-aligned)."""
    x = torch.cat([student, torch.ones(len(student), 1)], dim=1).double()
    ridge = 1e-2 * torch.eye(x.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(x.T @ x + ridge, x.T @ teacher.double())
    projection = torch.nn.Linear(student.shape[1], teacher.shape[1])
    with torch.no_grad():
        projection.weight.copy_(solution[:-1].T.float())
        projection.bias.copy_(solution[-1].float())
    return projection


def representation_loss(
    projection: torch.nn.Module, pooled: torch.Tensor, targets: torch.Tensor,
    kind: str = "cosine",
) -> torch.Tensor:  # fmt: skip
    """``cosine``: mean over the batch of 1 - cos(projection(student embedding), teacher
    embedding). ``contrastive``: InfoNCE over the batch (each student embedding must pick its
    own text's teacher embedding among the batch's, temperature 0.05), which asks for the
    teacher's relative geometry rather than its absolute position."""
    projected = projection(pooled)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(projected, targets, dim=1)).mean()
    logits = F.normalize(projected, dim=1) @ F.normalize(targets, dim=1).T / 0.05
    return F.cross_entropy(logits, torch.arange(len(logits)))


@dataclass
class Hint:
    """One training phase's representation term: the projection being trained and the
    teacher embeddings of the phase's training rows (row-aligned)."""

    projection: torch.nn.Linear
    targets: torch.Tensor
    weight: float
    kind: str = "cosine"
    start_loss: float = 0.0  # the term on the training rows before the first step

    def measured(self, model: Any, tokenizer: Any, ids: list[list[int]]) -> dict[str, float]:
        """The term (unweighted) on the training rows at the start and now, for the card."""
        _, pooled = predict_logits_and_embeddings(model, tokenizer, ids)
        with torch.no_grad():
            end = float(representation_loss(self.projection, pooled, self.targets, self.kind))
        return {"start": round(self.start_loss, 4), "end": round(end, 4)}

    def loss(self, pooled: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return self.weight * representation_loss(
            self.projection, pooled, self.targets[rows], self.kind
        )


def hint_for(
    model: Any, tokenizer: Any, train: TokenizedSplit, representation: RepresentationTargets | None
) -> Hint | None:
    """The representation term for a phase training on ``train``; None when it is off."""
    targets = train.teacher_embeddings
    if representation is None or targets is None:
        return None
    _, pooled = predict_logits_and_embeddings(model, tokenizer, train.input_ids)
    projection = fitted_projection(pooled, targets)
    with torch.no_grad():
        start = float(representation_loss(projection, pooled, targets, representation.kind))
    return Hint(projection, targets, representation.weight, representation.kind, start)


def forward_with_embedding(model: Any, enc: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the mean-pooled last hidden layer of one training forward pass."""
    out = model(**enc, output_hidden_states=True)
    return out.logits.float(), mean_pooled(out.hidden_states[-1].float(), enc["attention_mask"])
