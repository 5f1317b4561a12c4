"""Spot checks: a seeded, confidence-blind sample of teacher labels goes to people; what they
decide measures each teacher (per label too) and decides which teacher a dataset believes.
Real OpenAI-protocol HTTP servers as teachers, a real DuckDB file, the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import run_cli
from tests.openai_server import FakeOpenAI, serve
from tests.warehouse_cases import capture
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.agreement import spot_check_agreement, teacher_weights
from tutorloop.labeling.relabel import relabel, spot_checked
from tutorloop.labeling.review import resolve
from tutorloop.labeling.teacher_openai import OpenAITeacher
from tutorloop.trainer.dataset import DatasetSpec, assemble

LABELS = ["card_arrival", "card_lost", "top_up_failed", "top_up_limits"]
# Ground truth of the texts below: "card ..." is card_arrival, "top up ..." top_up_failed.
TEXTS = [f"my card {i} has not arrived" for i in range(60)] + [
    f"top up {i} failed" for i in range(60)
]


def _truth(text: str) -> str:
    return "card_arrival" if text.startswith("my card") else "top_up_failed"


def _endpoint(card_label: str) -> Iterator[FakeOpenAI]:
    """A teacher that calls every card question ``card_label`` and is right on top-ups."""
    with serve(FakeOpenAI(rules=[("card", card_label)], fallback="top_up_failed", slow_s=0)) as s:
        yield s


@pytest.fixture
def right() -> Iterator[FakeOpenAI]:
    """A teacher that is right on both kinds of text."""
    yield from _endpoint("card_arrival")


@pytest.fixture
def wrong_on_cards() -> Iterator[FakeOpenAI]:
    yield from _endpoint("card_lost")


def _teacher(fake: FakeOpenAI, model: str) -> OpenAITeacher:
    cfg = OpenAITeacherSettings(base_url=fake.url, model=model, logprobs=False, max_retries=0)
    return OpenAITeacher(cfg, LABELS)


def _resolve_open_spot_checks(warehouse: Warehouse) -> int:
    rows = warehouse.query(
        "SELECT r.item_id, c.text FROM review_queue r JOIN cases c USING (case_id)"
        " WHERE r.reason = 'spot_check' AND r.status = 'open'"
    )
    for item_id, text in rows:
        resolve(warehouse, item_id, _truth(text), "reviewer")
    return len(rows)


def test_the_sample_is_drawn_by_case_hash_whatever_the_teacher_said_and_is_shown_blind(
    settings: Settings, warehouse: Warehouse, right: FakeOpenAI
) -> None:
    case_ids = capture(warehouse, TEXTS)
    report = relabel(warehouse, _teacher(right, "a"), spot_check=0.25, review_below=0.0)
    sampled = {c for c in case_ids if spot_checked(c, 0.25)}
    assert 10 <= len(sampled) <= 50  # 120 x 0.25 = 30 expected
    items = warehouse.query(
        "SELECT case_id, teacher_id, teacher_label FROM review_queue WHERE reason = 'spot_check'"
    )
    assert {case_id for case_id, _, _ in items} == sampled
    assert report.spot_checks == len(sampled) == report.review_items
    assert all(t.startswith("openai:a:") and label for _, t, label in items)
    # Nothing is sampled at 0, and a larger fraction draws a superset (same hash, same cases).
    assert not any(spot_checked(c, 0.0) for c in case_ids)
    assert sampled <= {c for c in case_ids if spot_checked(c, 0.5)}

    # The reviewer decides without seeing the teacher's answer on an open spot check.
    env = {"TUTORLOOP_DATA_DIR": str(settings.data_dir)}
    listed = json.loads(run_cli("teacher", "review", "--json", "--limit", "500", env=env).stdout)
    spot = [row for row in listed if row["reason"] == "spot_check"]
    assert len(spot) == len(sampled)
    assert all(row["teacher_label"] is None and row["teacher_confidence"] is None for row in spot)
    no_checks = run_cli("teacher", "agreement", env=env)
    assert no_checks.returncode == 0 and "no resolved spot checks yet" in no_checks.stdout


def test_agreement_is_measured_per_teacher_and_label_and_the_dataset_believes_the_better_one(
    settings: Settings, warehouse: Warehouse, right: FakeOpenAI, wrong_on_cards: FakeOpenAI
) -> None:
    capture(warehouse, TEXTS)
    # The better teacher answers first: by recency alone, the worse one's labels would win.
    relabel(warehouse, _teacher(right, "good"), spot_check=0.3, review_below=0.0)
    relabel(warehouse, _teacher(wrong_on_cards, "bad"), spot_check=0.3, review_below=0.0)
    assert _resolve_open_spot_checks(warehouse) > 0

    agreements = {(a.teacher_id.split(":")[1], a.label): a for a in spot_check_agreement(warehouse)}
    good, bad = agreements["good", None], agreements["bad", None]
    assert good.checked == bad.checked > 10  # the same spot-checked cases measure both
    assert good.agreed == good.checked
    cards = agreements["bad", "card_lost"]
    tops = agreements["bad", "top_up_failed"]
    assert cards.agreed == 0 and tops.agreed == tops.checked > 0
    assert bad.agreed == tops.checked and bad.checked == cards.checked + tops.checked
    assert bad.interval().upper is not None and bad.interval().upper < good.interval().lower  # type: ignore[operator]
    weights = teacher_weights(warehouse)
    assert weights[good.teacher_id] > 0.9 > weights[bad.teacher_id]

    rows, _ = assemble(warehouse, DatasetSpec(labels=tuple(LABELS), eval_fraction=0.0,
                                              eval_min_per_label=0, eval_min_oos=0))  # fmt: skip
    teacher_rows = [r for r in rows if r.source == "teacher"]
    assert len(teacher_rows) > 50
    assert all(r.label == _truth(r.text) for r in teacher_rows)
    # Naming a teacher still takes that teacher's labels, however it fared.
    named, _ = assemble(
        warehouse,
        DatasetSpec(labels=tuple(LABELS), eval_fraction=0.0, eval_min_per_label=0,
                    eval_min_oos=0, teacher_id=bad.teacher_id),
    )  # fmt: skip
    assert any(r.label == "card_lost" for r in named if r.source == "teacher")

    env = {"TUTORLOOP_DATA_DIR": str(settings.data_dir)}
    shown = run_cli("teacher", "agreement", "--json", "--by-label", env=env)
    assert shown.returncode == 0, shown.stderr
    listed = {(r["teacher_id"].split(":")[1], r["label"]): r for r in json.loads(shown.stdout)}
    assert listed["bad", "card_lost"]["rate"] == 0.0
    assert listed["good", None]["agreed"] == good.agreed
