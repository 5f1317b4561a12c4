"""Representation distillation: the projection's start, the term pulling real MiniLM weights
toward a real mpnet teacher's embeddings, the OpenAI-protocol embeddings client against a
real local HTTP server, and a failing endpoint turning the term off instead of the run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset

from tests.openai_server import FakeOpenAI, serve
from tests.test_trainer import TRAIN, tiny_settings
from tutorloop.infra.settings import ConfigError, load_settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.embeddings import Encoder
from tutorloop.labeling.embeddings_openai import EmbeddingsUnavailableError, OpenAIEmbeddings
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.models import resolve_model
from tutorloop.trainer.dataset_store import dataset_features
from tutorloop.trainer.representation import (
    Hint,
    RepresentationTargets,
    fitted_projection,
    forward_with_embedding,
    representation_loss,
)
from tutorloop.trainer.splits import pad
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student


def test_the_projection_starts_at_the_least_squares_map() -> None:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(300, 16, generator=generator)
    teacher = torch.nn.functional.normalize(
        student @ torch.randn(16, 24, generator=generator), dim=1
    )
    with torch.no_grad():
        fitted = representation_loss(fitted_projection(student, teacher), student, teacher)
        random_start = representation_loss(torch.nn.Linear(16, 24), student, teacher)
    assert float(fitted) < 0.01 < 0.5 < float(random_start)


def test_the_contrastive_loss_asks_for_the_teachers_geometry_not_its_position() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(32, 24, generator=generator), dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(24, 24, generator=generator))
    identity = torch.nn.Identity()
    with torch.no_grad():
        same = representation_loss(identity, teacher, teacher, "contrastive")
        rotated = representation_loss(identity, teacher @ rotation, teacher, "contrastive")
        shuffled = representation_loss(identity, teacher.roll(1, dims=0), teacher, "contrastive")
    # Each row finds its own teacher row; a shuffled batch pairs rows with the wrong texts.
    assert float(same) < 0.1 < 2.0 < float(shuffled)
    # A rotation keeps distances but not positions: cosine would no longer match, and
    # InfoNCE is worse too (the projection is what learns the rotation back).
    assert float(rotated) > float(same)


def _row(i: int, text: str, label: str, labels: list[str]) -> dict[str, Any]:
    return {
        "case_id": f"c{i}", "text": text, "label": labels.index(label),
        "soft_targets": [1.0 if x == label else 0.0 for x in labels], "source": "human",
        "split": "validation" if i % 10 == 0 else "train", "replay": False, "private": False,
    }  # fmt: skip


def _dataset(labels: list[str]) -> Any:
    rows = read_labeled_csv(TRAIN)
    pairs = enumerate(zip(rows.texts, rows.labels, strict=True))
    return Dataset.from_list(
        [_row(i, text, label, labels) for i, (text, label) in pairs],
        features=dataset_features(labels),
    )


def test_the_term_reaches_the_encoder_and_is_reported(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d")
    cfg = settings.trainer.model_copy(update={"quantization": "none"})
    labels = sorted(set(read_labeled_csv(TRAIN).labels))
    encoder = Encoder(resolve_model("all-mpnet-base-v2", settings.models_dir))
    base = resolve_model(cfg.base_model, settings.models_dir)
    # One batch: the term alone puts a gradient on every LoRA matrix of the encoder's layers
    # (the projection is not all it trains; the pooler and head are not on its path).
    student = load_student(base, labels, cfg)
    texts = read_labeled_csv(TRAIN).texts[:16]
    enc = pad(student.tokenizer, student.tokenizer(texts, truncation=True)["input_ids"])
    targets = torch.as_tensor(encoder.encode(texts))
    hint = Hint(torch.nn.Linear(384, targets.shape[1]), targets, 1.0)
    student.model.train()
    _, pooled = forward_with_embedding(student.model, enc)
    hint.loss(pooled, list(range(16))).backward()  # type: ignore[no-untyped-call]
    lora = [(n, p) for n, p in student.model.named_parameters()
            if "lora_B" in n and "encoder.layer" in n]  # fmt: skip
    assert lora and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for _, p in lora)
    # A whole run: on, the card gets the term's value on the training rows at the start
    # (the least-squares fit) and the end; off, nothing.
    metrics = {}
    for weight in (0.0, 1.0):
        student = load_student(base, labels, cfg)
        on = RepresentationTargets(encoder.encode, weight, "local:all-mpnet-base-v2")
        outcome = train_student(
            student, _dataset(labels), cfg, representation=on if weight else None
        )
        metrics[weight] = outcome.metrics
    assert "representation_loss" not in metrics[0.0]
    losses = metrics[1.0]["representation_loss"]
    assert set(losses) == {"start", "end"} and 0 <= losses["start"] < 1 and 0 < losses["end"] < 1


def _endpoint(fake: FakeOpenAI, **overrides: Any) -> OpenAITeacherSettings:
    return OpenAITeacherSettings(
        base_url=fake.url, embeddings_model="test-embed", backoff_initial_s=0.01,
        backoff_max_s=0.05, max_retries=2, **overrides,
    )  # fmt: skip


def test_endpoint_embeddings_come_back_in_input_order_normalized_with_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-embed")
    texts = [f"where is my card {i}" for i in range(70)] + ["top up failed", "hello"]
    with serve(FakeOpenAI([("card", "card_arrival"), ("top up", "top_up_failed")],
                          "other", embeddings_failures=1)) as fake:  # fmt: skip
        embed = OpenAIEmbeddings(_endpoint(fake, api_key_env="TEST_EMBED_KEY"))
        out = embed(texts)
    assert out.shape == (72, 16)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The server answers in reverse order: each row must be put back where its text was.
    assert out[:70].argmax(axis=1).tolist() == [0] * 70
    assert out[70:].argmax(axis=1).tolist() == [1, 2]
    # One 503 retried, then two batches of at most 64 inputs.
    assert [len(r["body"]["input"]) for r in fake.requests] == [64, 64, 8]
    assert all(r["headers"]["Authorization"] == "Bearer sk-embed" for r in fake.requests)


@pytest.mark.parametrize(
    ("failures", "status", "says"),
    [(10, 0, "HTTP 503 (gave up after 3 attempts)"), (0, 400, "HTTP 400")],
)
def test_an_endpoint_that_cannot_embed_says_why(failures: int, status: int, says: str) -> None:
    fake = FakeOpenAI([], "other", embeddings_failures=failures, embeddings_status=status)
    with serve(fake), pytest.raises(EmbeddingsUnavailableError, match=re.escape(says)):
        OpenAIEmbeddings(_endpoint(fake))(["where is my card"])


def test_a_failing_endpoint_turns_the_term_off_not_the_run(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d")
    cfg = settings.trainer.model_copy(update={"quantization": "none"})
    labels = sorted(set(read_labeled_csv(TRAIN).labels))
    student = load_student(resolve_model(cfg.base_model, settings.models_dir), labels, cfg)
    with serve(FakeOpenAI([], "other", embeddings_status=500)) as fake:
        embeddings = OpenAIEmbeddings(_endpoint(fake))
        targets = RepresentationTargets(embeddings, 1.0, embeddings.source)
        outcome = train_student(student, _dataset(labels), cfg, representation=targets)
    assert outcome.steps > 0
    assert targets.card() == {
        "weight": 1.0, "loss": "cosine", "source": "openai:test-embed",
        "off_reason": "embeddings: HTTP 500 (gave up after 3 attempts)",
    }  # fmt: skip


@pytest.mark.parametrize(
    "teacher", [{"backend": "human"}, {"backend": "openai"}], ids=["human", "openai-no-model"]
)
def test_a_representation_weight_without_teacher_embeddings_is_refused(
    tmp_path: Path, teacher: dict[str, Any]
) -> None:
    says = "invalid settings: trainer.representation_weight > 0 needs teacher embeddings"
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(data_dir=tmp_path, trainer={"representation_weight": 1.0}, teacher=teacher)
    ok = load_settings(
        data_dir=tmp_path, trainer={"representation_weight": 1.0},
        teacher={"backend": "openai", "openai": {"embeddings_model": "text-embedding-3-small"}},
    )  # fmt: skip
    assert ok.trainer.representation_weight == 1.0
