"""Build the configured teacher and find the label set it labels with."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from tutorloop.evaluation.metrics import FloatArray
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.embeddings_openai import OpenAIEmbeddings
from tutorloop.labeling.teacher import Teacher
from tutorloop.labeling.teacher_local import LocalTeacher
from tutorloop.labeling.teacher_openai import OpenAITeacher


class NoLabelSetError(TutorloopError):
    """No label set is configured and none can be found in the warehouse."""


def label_set(settings: Settings, warehouse: Warehouse) -> list[str]:
    """``teacher.labels``, else the champion's label set, else every label seen so far."""
    if settings.teacher.labels:
        return sorted(set(settings.teacher.labels))
    champion = warehouse.query(
        "SELECT label_set FROM model_versions WHERE status = 'champion'"
        " ORDER BY created_at DESC LIMIT 1"
    )
    if champion:
        return sorted(json.loads(champion[0][0]))
    seen = warehouse.query("SELECT DISTINCT label FROM labels ORDER BY label")
    labels = [label for (label,) in seen]
    if len(labels) < 2:
        raise NoLabelSetError(
            "no label set: set teacher.labels, promote a model, or import labeled data "
            "(tutorloop dataset import --data CSV)"
        )
    return labels


def build_teacher(settings: Settings, warehouse: Warehouse) -> Teacher | None:
    """The teacher of ``teacher.backend``; ``None`` for ``human`` (people label via review)."""
    backend = settings.teacher.backend
    if backend == "human":
        return None
    if backend == "local":
        return LocalTeacher(
            settings.teacher_path, settings.models_dir, batch_size=settings.teacher.batch_size
        )

    return OpenAITeacher(settings.teacher.openai, label_set(settings, warehouse))


def teacher_embedder(settings: Settings) -> tuple[Callable[[Sequence[str]], FloatArray], str]:
    """Texts -> the configured teacher's embeddings, and what produces them (for the model
    card): the local teacher's encoder, or the endpoint's ``embeddings_model``. Settings
    refuse a representation weight without a source, so ``human`` never gets here."""
    if settings.teacher.backend == "local":
        teacher = LocalTeacher(
            settings.teacher_path, settings.models_dir, batch_size=settings.teacher.batch_size
        )
        return teacher.embed, teacher.embedding_source
    embeddings = OpenAIEmbeddings(settings.teacher.openai)
    return embeddings, embeddings.source
