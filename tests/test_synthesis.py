"""Synthetic cases (an LLM teacher's paraphrases and contrast edits) against a real local
OpenAI-protocol server, a real DuckDB file and a real PostgreSQL server: what reaches the
endpoint, what is stored, lineage, caps, evaluation exclusion, erasure and retention."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.conftest import on_postgres, run_cli
from tests.openai_server import FakeOpenAI, serve
from tests.test_dataset import _spec  # the same spec defaults as the dataset tests
from tests.warehouse_cases import capture
from tutorloop.infra.settings import ConfigError, Settings, load_settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings, SynthesisSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.case_store import insert_labels
from tutorloop.labeling.relabel import relabel
from tutorloop.labeling.synthesis import SyntheticWriter, synthesize
from tutorloop.labeling.teacher_openai import OpenAITeacher
from tutorloop.loop.progress import no_progress
from tutorloop.loop.teach import teach
from tutorloop.privacy.erasure import forget, purge
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.trainer.dataset import assemble

LABELS = ("card_arrival", "card_lost", "top_up_failed", "top_up_limits")
EMAIL = "jane.canary@example.com"
PLANTED = "bob.canary@example.com"  # the address the server writes into a paraphrase


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(
        rules=[("card", "card_arrival"), ("top up", "top_up_failed")],
        fallback="card_lost",
        # The label value's first token: "top" beside "card" gives card_arrival a runner-up.
        alternatives={"card_arrival": {"card": [("top", 0.3)]}},
    )
    with serve(server) as running:
        yield running


def _cfg(fake: FakeOpenAI, **overrides: object) -> OpenAITeacherSettings:
    values: dict[str, object] = {
        "base_url": fake.url, "model": "m", "max_retries": 0, "timeout_s": 2.0,
        "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0,
    }  # fmt: skip
    return OpenAITeacherSettings.model_validate(values | overrides)


def _writer(fake: FakeOpenAI, **synthesis: object) -> SyntheticWriter:
    cfg = SynthesisSettings.model_validate({"enabled": True} | synthesis)
    return SyntheticWriter(_cfg(fake), cfg, LABELS)


def _synthetic(warehouse: Warehouse) -> list[dict[str, object]]:
    return warehouse.query_dicts(
        "SELECT c.*, s.source_case_id, s.kind, s.intended_label, s.generator_id,"
        " s.prompt_hash FROM cases c JOIN synthetic_cases s"
        " USING (case_id) ORDER BY c.case_id"
    )


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_written_from_scrubbed_text_stored_scrubbed_with_lineage_and_kept_out_of_evaluation(
    settings: Settings, fake: FakeOpenAI, backend: str, request: pytest.FixtureRequest
) -> None:
    url = None if backend == "duckdb" else str(request.getfixturevalue("postgres_url"))
    warehouse = open_warehouse(on_postgres(settings, url))
    texts = [
        f"my card has not arrived, mail {EMAIL}",
        "where is my card [synth-pii]",
        "card never came [synth-bad]",
        "card stuck [synth-junk]",
        "card trouble [synth-disputed]",
        "top up failed again",
    ]
    ids = capture(warehouse, texts)
    teacher = OpenAITeacher(_cfg(fake), LABELS)
    relabel(warehouse, teacher)
    fake.requests.clear()
    writer = _writer(fake)
    report = synthesize(warehouse, writer, RegexScrubber(), teacher.info.teacher_id)

    # Every source was shown its stored (scrubbed) text and nothing raw.
    assert report.sources == 6 and len(fake.requests) == 6
    stored = dict(warehouse.query("SELECT case_id, text FROM cases"))
    for sent in fake.requests:
        assert EMAIL not in json.dumps(sent["body"])
        assert any(f"Message: {stored[i]}\n" in sent["text"] for i in ids)
    # A runner-up in the teacher's soft targets is the contrast's target; without one the
    # model is asked to choose.
    card_request = next(r["text"] for r in fake.requests if "has not arrived" in r["text"])
    assert "target label: top_up" in card_request
    top_up_request = next(r["text"] for r in fake.requests if "top up failed" in r["text"])
    assert "you choose" in top_up_request

    rows = _synthetic(warehouse)
    # 5 answering sources x (1 paraphrase + 1 contrast); junk gives nothing.
    assert report.written == len(rows) == 10
    assert report.by_kind == {"paraphrase": 5, "contrast": 5}
    assert report.rejected == {
        "malformed_answer": 1, "unknown_label": 1, "paraphrase_changed_label": 1, "repeat": 1,
        "unknown_kind": 1, "more_than_asked": 1, "empty_or_too_long": 1,
    }  # fmt: skip
    errors = warehouse.query("SELECT case_id, kind FROM teacher_errors")
    assert [kind for _, kind in errors] == ["malformed"]  # the junk answer, its cost booked
    sources = warehouse.query_dicts("SELECT * FROM cases WHERE capture_reason <> 'synthetic'")
    by_id = {row["case_id"]: row for row in sources}
    for row in rows:
        source = by_id[row["source_case_id"]]
        assert row["capture_reason"] == "synthetic"
        for column in ("user_id", "tenant_id", "consent_training", "ts", "captured_at"):
            assert row[column] == source[column], column
        assert row["generator_id"] == writer.generator_id
        assert row["prompt_hash"] == writer.prompt_hash
        assert PLANTED not in str(row["text"])  # scrubbed again before it was stored
    planted = [r for r in rows if "once more" in str(r["text"]) and "pii" in str(r["text"])]
    assert planted and json.loads(str(planted[0]["scrub_findings"])).get("EMAIL_ADDRESS") == 1
    # Every paid call is booked once: on its first synthetic case, or as an error.
    [(paid,)] = warehouse.query(
        "SELECT (SELECT sum(cost_usd) FROM synthetic_cases)"
        " + (SELECT sum(cost_usd) FROM teacher_errors)"
    )
    assert float(paid) == pytest.approx(report.cost_usd) and report.cost_usd > 0

    # Asked once per generator: a second run finds no source and calls nothing.
    fake.requests.clear()
    assert synthesize(warehouse, writer, RegexScrubber(), teacher.info.teacher_id).sources == 0
    assert fake.requests == []

    # The teacher labels them like captured cases, without sending any to people.
    labeled = relabel(warehouse, teacher, spot_check=0.5, review_below=1.0)
    assert labeled.labeled == 10 and labeled.review_items == 0

    # Assembly: training only; the disputed paraphrase goes; a person's label on a source puts
    # it in evaluation, and its synthetic cases out of the dataset.
    late = ids[0]
    insert_labels_for(warehouse, late, "card_arrival")
    rows_built, counts = assemble(warehouse, _spec(eval_fraction=1.0))
    splits = {r.case_id: r.split for r in rows_built}
    assert splits[late] == "eval"
    synthetic_ids = {str(r["case_id"]) for r in rows}
    assert {splits[c] for c in synthetic_ids if c in splits} == {"train"}
    from_late = {str(r["case_id"]) for r in rows if r["source_case_id"] == late}
    assert from_late and not from_late & set(splits)
    assert counts["dropped"]["synthetic_source_not_training"] == 2
    assert counts["dropped"]["synthetic_label_disputed"] == 1
    assert counts["synthetic"] == 10 - 2 - 1


def insert_labels_for(warehouse: Warehouse, case_id: str, label: str) -> None:
    with warehouse.transaction() as con:
        insert_labels(
            con,
            [{"label_id": f"h-{case_id}", "case_id": case_id, "source": "human",
              "label": label, "confidence": 1.0, "actor": "reviewer"}],
        )  # fmt: skip


def test_a_users_synthetic_cases_count_against_their_cap_after_their_own(
    warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    capture(warehouse, ["card one", "card two", "top up three"], users=["ann", "ann", "bo"])
    teacher = OpenAITeacher(_cfg(fake), LABELS)
    relabel(warehouse, teacher)
    synthesize(warehouse, _writer(fake), RegexScrubber(), teacher.info.teacher_id)
    relabel(warehouse, teacher)
    rows, _ = assemble(warehouse, _spec(caps_per_user=3))
    reasons = dict(warehouse.query("SELECT case_id, capture_reason FROM cases"))
    users = dict(warehouse.query("SELECT case_id, user_id FROM cases"))
    kept = Counter((users[r.case_id], reasons[r.case_id]) for r in rows)
    # ann: her two cases and one of her four synthetic ones; bo: one case and two synthetic.
    assert kept == {("ann", "low_confidence"): 2, ("ann", "synthetic"): 1,
                    ("bo", "low_confidence"): 1, ("bo", "synthetic"): 2}  # fmt: skip


def test_a_source_gives_at_most_max_per_source(warehouse: Warehouse, fake: FakeOpenAI) -> None:
    capture(warehouse, ["card one"])
    teacher = OpenAITeacher(_cfg(fake), LABELS)
    relabel(warehouse, teacher)
    synthesize(warehouse, _writer(fake, paraphrases=2, contrasts=2), RegexScrubber(),
               teacher.info.teacher_id)  # fmt: skip
    # Another generator (another prompt temperature is the same prompt: another model) asks
    # the same source for what is left under the cap, and no more.
    other = SyntheticWriter(
        _cfg(fake, model="m2"), SynthesisSettings(enabled=True, paraphrases=3, contrasts=0),
        LABELS,
    )  # fmt: skip
    synthesize(warehouse, other, RegexScrubber(), teacher.info.teacher_id)
    assert "Write 0 paraphrase" not in fake.requests[-1]["text"]
    kinds = Counter(str(r["kind"]) for r in _synthetic(warehouse))
    assert sum(kinds.values()) == 4 == SynthesisSettings().max_per_source
    assert synthesize(warehouse, other, RegexScrubber(), teacher.info.teacher_id).sources == 0


def test_erasure_and_retention_take_synthetic_cases_with_their_source(
    warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    capture(warehouse, ["card one", "top up two"], users=["ann", "bo"])
    teacher = OpenAITeacher(_cfg(fake), LABELS)
    relabel(warehouse, teacher)
    synthesize(warehouse, _writer(fake), RegexScrubber(), teacher.info.teacher_id)
    relabel(warehouse, teacher)
    report = forget(warehouse, "ann", tenant_id="acme", actor="dpo")
    assert report.cases_deleted == 3  # her case and the two written from it
    left = _synthetic(warehouse)
    assert {r["user_id"] for r in left} == {"bo"} and len(left) == 2
    assert warehouse.query("SELECT count(*) FROM synthetic_cases")[0][0] == 2
    purge(warehouse, timedelta(0))
    assert warehouse.query("SELECT count(*) FROM synthetic_cases")[0][0] == 0
    assert warehouse.query("SELECT count(*) FROM cases")[0][0] == 0


def test_the_cycle_step_writes_and_labels_synthetic_cases(
    settings: Settings, warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    capture(warehouse, ["card one", "top up two"])
    configured = load_settings(
        data_dir=settings.data_dir,
        teacher={
            "backend": "openai", "labels": list(LABELS), "spot_check_fraction": 0.5,
            "openai": {"base_url": fake.url, "model": "m", "max_retries": 0},
            "synthesis": {"enabled": True, "paraphrases": 2, "contrasts": 1},
        },
    )  # fmt: skip
    report = teach(configured, warehouse, no_progress)
    assert report["labeled"] == 2
    synthesis = report["synthesis"]
    assert (synthesis["sources"], synthesis["written"]) == (2, 6)
    assert synthesis["relabel"]["labeled"] == 6 and synthesis["relabel"]["review_items"] == 0
    assert warehouse.query("SELECT count(*) FROM labels WHERE source = 'teacher'")[0][0] == 8


def test_synthesis_needs_an_llm_teacher() -> None:
    with pytest.raises(ConfigError, match="needs an LLM teacher"):
        load_settings(teacher={"synthesis": {"enabled": True}})
    with pytest.raises(ConfigError, match="asks for nothing"):
        load_settings(
            teacher={"backend": "openai",
                     "synthesis": {"enabled": True, "paraphrases": 0, "contrasts": 0}}
        )  # fmt: skip


def test_the_cli_writes_labels_and_refuses_without_an_llm(
    settings: Settings, warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    capture(warehouse, ["card one", "top up two"])
    env = {
        "TUTORLOOP_DATA_DIR": str(settings.data_dir),
        "TUTORLOOP_TEACHER__BACKEND": "openai",
        "TUTORLOOP_TEACHER__LABELS": json.dumps(LABELS),
        "TUTORLOOP_TEACHER__OPENAI__BASE_URL": fake.url,
        "TUTORLOOP_TEACHER__OPENAI__MAX_RETRIES": "0",
    }
    assert run_cli("teacher", "relabel", env=env).returncode == 0
    done = run_cli("teacher", "synthesize", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["sources"], report["written"], report["relabel"]["labeled"]) == (2, 4, 4)
    local = run_cli("teacher", "synthesize", env={"TUTORLOOP_DATA_DIR": str(settings.data_dir)})
    assert local.returncode != 0
    assert "need an LLM teacher" in local.stderr and len(local.stderr.strip().splitlines()) == 1
