"""The dataset builder on a real DuckDB file, with labels from a teacher behind a real server."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import on_postgres, run_cli
from tests.openai_server import FakeOpenAI, serve
from tests.warehouse_cases import capture
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.case_store import insert_labels
from tutorloop.labeling.relabel import relabel
from tutorloop.labeling.teacher_openai import OpenAITeacher
from tutorloop.registry.version_rows import evaluation_set
from tutorloop.trainer.dataset import DatasetSpec, EmptyDatasetError
from tutorloop.trainer.dataset_spec import unit as _unit
from tutorloop.trainer.dataset_store import build_dataset

LABELS = ("card_arrival", "card_lost", "top_up_failed", "top_up_limits")
DATA = Path(__file__).parent / "data"


@pytest.fixture
def settings(settings: Settings, backend_url: str | None) -> Settings:
    # Every dataset test that takes the settings runs on DuckDB and on a real PostgreSQL.
    return on_postgres(settings, backend_url)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(
        rules=[("card", "card_arrival"), ("top up", "top_up_failed")], fallback="card_lost"
    )
    with serve(server) as running:
        yield running


def _relabel(warehouse: Warehouse, fake: FakeOpenAI) -> None:
    cfg = OpenAITeacherSettings(base_url=fake.url, model="m", logprobs=False)
    report = relabel(warehouse, OpenAITeacher(cfg, LABELS))
    assert report.failed == 0


def _spec(**overrides: object) -> DatasetSpec:
    values: dict[str, object] = {
        "labels": LABELS, "eval_fraction": 0.0, "seed": 3, "eval_min_per_label": 0,
        "eval_min_oos": 0,
    }  # fmt: skip
    return DatasetSpec(**(values | overrides))  # type: ignore[arg-type]


def test_targets_dedup_consent_caps_and_a_stable_hash(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    texts = [
        "my card has not come",  # 0 teacher card_arrival, human card_lost
        "MY CARD  has not come",  # 1 duplicate of 0 after normalisation
        "top up failed",  # 2 teacher only
        "top up failed twice",  # 3 no consent
        "card a",  # 4-6 one user, capped at 2
        "card b",
        "card c",
        "something else",  # 7 teacher card_lost
    ]
    users = ["u0", "u1", "u2", "u3", "heavy", "heavy", "heavy", "u7"]
    consent = [True, True, True, False, True, True, True, True]
    ids = capture(warehouse, texts, users=users, consent=consent, human_labels={0: "card_lost"})
    _relabel(warehouse, fake)
    spec = _spec(caps_per_user=2, human_weight=0.3, validation_fraction=0.1)
    version = build_dataset(warehouse, spec, settings.datasets_dir)
    rows = {r.case_id: r for r in version.rows}

    assert ids[3] not in rows  # no consent: the sink never stored it as a case
    assert sum(cid in rows for cid in ids[4:7]) == 2  # per-user cap
    assert ids[1] not in rows and ids[0] in rows  # dedup keeps the human-labeled one
    mixed = rows[ids[0]]
    assert (mixed.label, mixed.source) == ("card_lost", "human+teacher")
    assert mixed.soft_targets == (0.7, 0.3, 0.0, 0.0)  # 0.3 human + 0.7 teacher
    assert rows[ids[2]].soft_targets == (0.0, 0.0, 1.0, 0.0)
    assert version.counts["dropped"] == {"no_consent_or_capped": 1, "duplicate": 1}
    assert version.counts["by_source"] == {"human+teacher": 1, "teacher": 4}

    saved = load_from_disk(str(version.path))
    assert saved.features["label"].names == list(LABELS)
    assert Counter(saved["split"]) == Counter(r.split for r in version.rows)
    assert saved.num_rows == 5
    members = warehouse.query(
        "SELECT count(*) FROM dataset_members WHERE dataset_hash = ?", [version.dataset_hash]
    )
    assert members == [(5,)]

    again = build_dataset(warehouse, spec, settings.datasets_dir)
    assert (again.dataset_hash, again.created) == (version.dataset_hash, False)
    assert warehouse.query("SELECT count(*) FROM dataset_versions") == [(1,)]
    other = build_dataset(
        warehouse, _spec(caps_per_user=2, human_weight=0.5), settings.datasets_dir
    )
    assert other.dataset_hash != version.dataset_hash


def test_gold_eval_set_is_fixed_and_never_trained_on(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    texts = [f"card question {i}" for i in range(40)]
    humans = {i: "card_lost" for i in range(0, 40, 2)}
    ids = capture(warehouse, texts, human_labels=humans)
    # The same text as a human-labeled case arrives again: it must not be trained on.
    ids += capture(warehouse, ["CARD question 0"])
    _relabel(warehouse, fake)
    spec = _spec(eval_fraction=0.4)
    version = build_dataset(warehouse, spec, settings.datasets_dir)
    eval_ids = {r.case_id for r in version.rows if r.split == "eval"}
    expected = {ids[i] for i in humans if _unit(spec.seed, ids[i]) < 0.4}
    assert eval_ids == expected and eval_ids
    assert all(r.source == "human" for r in version.rows if r.split == "eval")
    eval_texts = {r.text.lower() for r in version.rows if r.split == "eval"}
    assert not any(r.text.lower() in eval_texts for r in version.rows if r.split != "eval")
    # More data later: the evaluation members of before stay evaluation members.
    more = capture(warehouse, [f"card later {i}" for i in range(20)], human_labels={0: "card_lost"})
    _relabel(warehouse, fake)
    later = build_dataset(warehouse, spec, settings.datasets_dir)
    later_eval = {r.case_id for r in later.rows if r.split == "eval"}
    assert eval_ids <= later_eval <= eval_ids | {more[0]}


def test_a_case_trained_on_never_moves_into_the_eval_set(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    ids = capture(warehouse, [f"card trained {i}" for i in range(30)])
    _relabel(warehouse, fake)  # teacher labels only: every case is a training row
    spec = _spec(eval_fraction=0.4)
    first = build_dataset(warehouse, spec, settings.datasets_dir)
    assert not [r for r in first.rows if r.split == "eval"]
    # A person reviews them later: by the bucket alone, these would now be gold eval rows.
    would_leak = [i for i in ids if _unit(spec.seed, i) < 0.4]
    assert would_leak
    with warehouse.transaction() as con:
        insert_labels(
            con,
            [{"label_id": f"review-{i}", "case_id": i, "source": "human", "label": "card_lost",
              "confidence": 1.0, "actor": "reviewer"} for i in ids],
        )  # fmt: skip
    fresh = capture(warehouse, [f"card fresh {i}" for i in range(30)], human_labels={
        i: "card_lost" for i in range(30)
    })  # fmt: skip
    later = build_dataset(warehouse, spec, settings.datasets_dir)
    eval_ids = {r.case_id for r in later.rows if r.split == "eval"}
    assert not eval_ids & set(ids)
    assert {r.case_id for r in later.rows if r.split != "eval"} >= set(would_leak)
    # Cases never trained on still join it by their bucket.
    assert eval_ids == {i for i in fresh if _unit(spec.seed, i) < 0.4} and eval_ids


def test_the_eval_set_is_stratified_to_its_minimums_frozen_and_versioned(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    # 12 human-labeled top_up_failed cases, 4 card_arrival, 40 out-of-scope (card_lost plays
    # OOS): no row falls in the hash bucket (eval_fraction 0), so only the minimums hold out.
    humans = {i: "top_up_failed" for i in range(12)} | {i: "card_arrival" for i in range(12, 16)}
    humans |= {i: "card_lost" for i in range(16, 56)}
    ids = capture(warehouse, [f"query number {i}" for i in range(56)], human_labels=humans)
    spec = _spec(eval_min_per_label=5, eval_min_oos=30, oos_label="card_lost")
    first = build_dataset(warehouse, spec, settings.datasets_dir)
    held = Counter(r.label for r in first.rows if r.split == "eval")
    # At most half of a label's cases are held out: training keeps the rest.
    assert held == {"top_up_failed": 5, "card_arrival": 2, "card_lost": 20}
    assert first.counts["eval_shortfall"] == {
        "card_arrival": 3,
        "card_lost": 10,
        "top_up_limits": 5,
    }
    trained = {r.case_id for r in first.rows if r.split != "eval"}
    assert not trained & {r.case_id for r in first.rows if r.split == "eval"}
    assert len(trained) == 56 - sum(held.values())
    # The evaluation set's version is the hash the gates report.
    rows = evaluation_set(warehouse, first.dataset_hash)
    assert rows.digest == first.counts["eval_hash"] and rows.gold
    # Frozen: more traffic later never moves a held-out case back, nor a trained one in.
    capture(warehouse, [f"later query {i}" for i in range(10)],
            human_labels={i: "card_arrival" for i in range(10)})  # fmt: skip
    later = build_dataset(warehouse, spec, settings.datasets_dir)
    first_eval = {r.case_id for r in first.rows if r.split == "eval"}
    later_eval = {r.case_id for r in later.rows if r.split == "eval"}
    assert first_eval < later_eval and not later_eval & trained
    assert Counter(r.label for r in later.rows if r.split == "eval")["card_arrival"] == 5
    assert later.counts["eval_hash"] != first.counts["eval_hash"]
    assert set(ids) >= first_eval


def test_replay_samples_the_previous_version(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    capture(warehouse, [f"card old {i}" for i in range(30)])
    _relabel(warehouse, fake)
    first = build_dataset(warehouse, _spec(), settings.datasets_dir)
    assert first.counts["new"] == 30 and first.counts["replay"] == 0
    capture(warehouse, [f"top up new {i}" for i in range(20)])
    _relabel(warehouse, fake)
    second = build_dataset(
        warehouse, _spec(previous=first.dataset_hash, replay_fraction=0.5), settings.datasets_dir
    )
    assert second.counts["new"] == 20 and second.counts["replay"] == 10
    replayed = {r.case_id for r in second.rows if r.replay}
    assert replayed <= {r.case_id for r in first.rows}
    assert second.counts["dropped"]["not_replayed"] == 20


def test_split_is_stratified_per_label(
    warehouse: Warehouse, fake: FakeOpenAI, settings: Settings
) -> None:
    capture(warehouse, [f"card {i}" for i in range(40)] + [f"top up {i}" for i in range(20)])
    _relabel(warehouse, fake)
    version = build_dataset(warehouse, _spec(validation_fraction=0.25), settings.datasets_dir)
    validation = Counter(r.label for r in version.rows if r.split == "validation")
    assert validation == {"card_arrival": 10, "top_up_failed": 5}


def test_empty_warehouse_is_a_clear_error(warehouse: Warehouse, settings: Settings) -> None:
    with pytest.raises(EmptyDatasetError, match="no training rows: 0 cases"):
        build_dataset(warehouse, _spec(), settings.datasets_dir)
    env = {
        "TUTORLOOP_DATA_DIR": str(settings.data_dir),
        "TUTORLOOP_TEACHER__LABELS": json.dumps(LABELS),
    }
    result = run_cli("dataset", "build", env=env)
    assert result.returncode == 1 and "no training rows" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_build_and_list_through_the_cli(tmp_path: Path) -> None:
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path / "d"), "TUTORLOOP_PRIVACY__SCRUBBER": "regex"}
    csv = str(DATA / "banking77_train_slice.csv")
    imported = run_cli("dataset", "import", "--data", csv, "--json", env=env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["cases_added"] == 320
    twice = run_cli("dataset", "import", "--data", csv, "--json", env=env)
    assert json.loads(twice.stdout)["cases_added"] == 0  # idempotent
    test_csv = str(DATA / "banking77_test_slice.csv")
    evaluation = run_cli("dataset", "import", "--data", test_csv, "--eval", "--json", env=env)
    assert json.loads(evaluation.stdout)["cases_added"] == 160
    built = run_cli("dataset", "build", "--json", env=env, timeout=120)
    assert built.returncode == 0, built.stderr
    counts = json.loads(built.stdout)["counts"]
    # Seed gold is all for training (none held out); the --eval import is the eval set.
    assert counts["by_split"] == {"train": 288, "validation": 32, "eval": 160}
    listed = run_cli("dataset", "list", "--json", env=env)
    [row] = json.loads(listed.stdout)
    assert row["dataset_hash"] == json.loads(built.stdout)["dataset_hash"]


def test_rows_are_private_unless_the_operator_imported_them_as_public(
    warehouse: Warehouse, settings: Settings
) -> None:
    from tutorloop.labeling.gold import import_gold
    from tutorloop.labeling.labeled_csv import LabeledRows
    from tutorloop.privacy.scrubber import RegexScrubber

    seed = LabeledRows(
        ["where is my new card", "top up limit please"], ["card_arrival", "top_up_limits"]
    )
    reviewed = LabeledRows(["lost my card yesterday"], ["card_lost"])
    import_gold(warehouse, seed, RegexScrubber(), source="seed", actor="t")
    import_gold(warehouse, reviewed, RegexScrubber(), source="export", actor="t", private=True)
    capture(warehouse, ["top up failed twice"], human_labels={0: "top_up_failed"})
    version = build_dataset(warehouse, _spec(), settings.datasets_dir)
    rows = load_from_disk(str(version.path))
    flags = dict(zip(rows["text"], rows["private"], strict=True))
    assert flags == {
        "where is my new card": False, "top up limit please": False,
        "lost my card yesterday": True, "top up failed twice": True,
    }  # fmt: skip
    assert version.counts["private_train"] == 2
    assert {r.text: r.private for r in version.rows} == flags  # what the hash covered
