"""The OpenAI-compatible teacher against a real local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.openai_server import FakeOpenAI, serve
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.labeling.teacher import TeacherAnswer, TeacherFailure
from tutorloop.labeling.teacher_openai import OpenAITeacher

LABELS = ["card_arrival", "card_lost", "top_up_failed", "top_up_limits"]
KEY = "sk-test-canary-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(
        rules=[("card", "card_arrival"), ("top up", "top_up_failed")],
        fallback="card_lost",
        alternatives={
            "card_arrival": {"card": [("top", 0.2), ("xyz", 0.1)], "arrival": [("lost", 0.25)]}
        },
        slow_s=1.5,
    )
    with serve(server) as running:
        yield running


def _teacher(fake: FakeOpenAI, **overrides: object) -> OpenAITeacher:
    values: dict[str, object] = {
        "base_url": fake.url,
        "model": "test-model",
        "api_key_env": "TUTORLOOP_TEST_KEY",
        "timeout_s": 0.5,
        "backoff_initial_s": 0.05,
        "max_retries": 3,
        "concurrency": 3,
        "input_usd_per_mtok": 2.0,
        "output_usd_per_mtok": 8.0,
    }
    return OpenAITeacher(OpenAITeacherSettings.model_validate(values | overrides), LABELS)


def test_soft_targets_from_logprobs_and_cost(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUTORLOOP_TEST_KEY", KEY)
    [answer] = _teacher(fake).label_batch(["where is my card"])
    assert isinstance(answer, TeacherAnswer)
    assert answer.label == "card_arrival"
    # Path mass: card 0.7 x arrival 0.75; "top" 0.2 shared by the two top_up labels; "lost"
    # at the second token 0.7 x 0.25; "xyz" spells no label and is dropped (total 0.9).
    assert answer.soft_targets["card_arrival"] == pytest.approx(0.525 / 0.9, abs=1e-5)
    assert answer.soft_targets["card_lost"] == pytest.approx(0.175 / 0.9, abs=1e-5)
    assert answer.soft_targets["top_up_failed"] == pytest.approx(0.1 / 0.9, abs=1e-5)
    assert answer.soft_targets["top_up_limits"] == pytest.approx(0.1 / 0.9, abs=1e-5)
    assert answer.confidence == 0.9  # as stated by the model
    assert answer.rationale == "keyword match"
    prompt, completion = 100 + len("where is my card"), 20
    assert answer.tokens == prompt + completion
    assert answer.cost_usd == pytest.approx((prompt * 2.0 + completion * 8.0) / 1e6)
    [request] = fake.requests
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "test-model" and body["logprobs"] is True
    assert all(label in body["messages"][0]["content"] for label in LABELS)


def test_without_logprobs_the_answer_is_one_hot_with_the_stated_confidence(
    fake: FakeOpenAI,
) -> None:
    [answer] = _teacher(fake).label_batch(["my card [nologprobs]"])
    assert isinstance(answer, TeacherAnswer)
    assert answer.soft_targets == {"card_arrival": 1.0}
    assert answer.confidence == 0.9
    assert "Authorization" not in fake.requests[0]["headers"]  # no key configured


def test_bad_answers_fail_alone_and_the_batch_goes_on(fake: FakeOpenAI) -> None:
    texts = [
        "card one",
        "[malformed] card",
        "[unknown] card",
        "[refuse] card",
        "[slow] card",
        "top up please",
    ]
    results = _teacher(fake, max_retries=1).label_batch(texts)
    kinds = [r.kind if isinstance(r, TeacherFailure) else r.label for r in results]
    assert kinds == [
        "card_arrival",
        "malformed",
        "unknown_label",
        "refusal",
        "timeout",
        "top_up_failed",
    ]
    for result in results:
        if isinstance(result, TeacherFailure):
            assert "card" not in result.message  # failures never quote the text
    assert fake.calls_for("[slow]") == 2  # retried once, then given up
    malformed = results[1]
    assert isinstance(malformed, TeacherFailure) and malformed.tokens > 0  # a paid failure


def test_429_and_5xx_are_retried_with_backoff(fake: FakeOpenAI) -> None:
    results = _teacher(fake).label_batch(["[429] card", "[500] top up"])
    assert [r.label for r in results if isinstance(r, TeacherAnswer)] == [
        "card_arrival",
        "top_up_failed",
    ]
    assert fake.calls_for("[429]") == 2
    assert fake.calls_for("[500]") == 3


def test_retries_give_up_after_the_limit(fake: FakeOpenAI) -> None:
    [result] = _teacher(fake, max_retries=1).label_batch(["[500] card"])
    assert isinstance(result, TeacherFailure)
    assert result.kind == "http" and "HTTP 500" in result.message
    assert fake.calls_for("[500]") == 2


def test_concurrency_is_limited(fake: FakeOpenAI) -> None:
    fake.hold_s = 0.1
    results = _teacher(fake).label_batch([f"card {i}" for i in range(12)])
    assert all(isinstance(r, TeacherAnswer) for r in results)
    assert 2 <= fake.max_in_flight <= 3


def test_unreachable_endpoint_is_a_failure_not_a_crash() -> None:
    cfg = OpenAITeacherSettings(
        base_url="http://127.0.0.1:9/v1", max_retries=0, backoff_initial_s=0.01
    )
    [result] = OpenAITeacher(cfg, LABELS).label_batch(["card"])
    assert isinstance(result, TeacherFailure) and result.kind == "http"


def test_teacher_id_changes_with_the_label_set(fake: FakeOpenAI) -> None:
    one = _teacher(fake).info.teacher_id
    cfg = OpenAITeacherSettings(base_url=fake.url, model="test-model")
    other = OpenAITeacher(cfg, [*LABELS, "new_label"]).info.teacher_id
    assert one != other and one.startswith("openai:test-model:")
