"""The relabel job: cache, provenance, review queue, failures, interruption — real server, real
DuckDB file, the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import CLI, run_cli, wait_until
from tests.openai_server import FakeOpenAI, serve
from tests.warehouse_cases import capture
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.relabel import relabel
from tutorloop.labeling.teacher import TeacherResult
from tutorloop.labeling.teacher_openai import OpenAITeacher
from tutorloop.privacy.erasure import forget

LABELS = ["card_arrival", "card_lost", "top_up_failed", "top_up_limits"]
EMAIL = "jane.canary@example.com"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(
        rules=[("card", "card_arrival"), ("top up", "top_up_failed")],
        fallback="card_lost",
        slow_s=1.0,
    )
    with serve(server) as running:
        yield running


def _teacher(fake: FakeOpenAI) -> OpenAITeacher:
    cfg = OpenAITeacherSettings(
        base_url=fake.url, model="m", timeout_s=0.5, max_retries=0, concurrency=4,
        input_usd_per_mtok=1.0, output_usd_per_mtok=1.0, logprobs=False,
    )  # fmt: skip
    return OpenAITeacher(cfg, LABELS)


def _env(settings: Settings, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "TUTORLOOP_DATA_DIR": str(settings.data_dir),
        "TUTORLOOP_TEACHER__BACKEND": "openai",
        "TUTORLOOP_TEACHER__LABELS": json.dumps(LABELS),
        "TUTORLOOP_TEACHER__OPENAI__BASE_URL": fake.url,
        "TUTORLOOP_TEACHER__OPENAI__MAX_RETRIES": "0",
        "TUTORLOOP_TEACHER__OPENAI__TIMEOUT_S": "0.5",
        **extra,
    }


def test_every_case_is_labeled_once_with_provenance_and_reruns_call_nothing(
    warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    texts = ["my card has not come", "top up failed again", "MY CARD  has not come", "hello"]
    texts += [f"where is card {i}, mail me at {EMAIL}" for i in range(6)]
    capture(warehouse, texts)
    first = relabel(warehouse, _teacher(fake), batch_size=3)
    assert (first.pending, first.labeled, first.failed) == (10, 10, 0)
    # Case and whitespace variants share a text hash: 9 distinct texts, 9 calls.
    assert first.calls == 9 == len(fake.requests)
    rows = warehouse.query_dicts(
        "SELECT label, teacher_id, teacher_version, cost_usd, tokens, confidence, rationale"
        " FROM labels WHERE source = 'teacher'"
    )
    assert len(rows) == 10
    assert {r["teacher_version"] for r in rows} == {"m"}
    assert all(r["teacher_id"].startswith("openai:m:") for r in rows)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(first.cost_usd)
    assert sum(r["tokens"] for r in rows) == first.tokens > 0
    assert Counter(r["label"] for r in rows) == Counter(
        {"card_arrival": 8, "top_up_failed": 1, "card_lost": 1}
    )
    # The teacher saw only scrubbed text.
    assert not any(EMAIL in r["text"] for r in fake.requests)
    assert any("<EMAIL_ADDRESS>" in r["text"] for r in fake.requests)

    again = relabel(warehouse, _teacher(fake), batch_size=3)
    assert (again.pending, again.calls) == (0, 0)
    # New cases with known texts come from the cache: no paid call.
    capture(warehouse, ["top up failed again"])
    third = relabel(warehouse, _teacher(fake), batch_size=3)
    assert (third.labeled, third.from_cache, third.calls) == (1, 1, 0)
    assert len(fake.requests) == 9


def test_failures_are_recorded_and_retried_and_review_items_are_queued(
    warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    texts = ["card ok", "[malformed] x", "[refuse] x", "[slow] x", "top up failed", "card low"]
    capture(warehouse, texts, human_labels={4: "top_up_limits"})
    report = relabel(warehouse, _teacher(fake), review_below=0.95)
    assert (report.labeled, report.failed) == (3, 3)
    assert report.failures == {"malformed": 1, "refusal": 1, "timeout": 1}
    errors = warehouse.query("SELECT kind, message FROM teacher_errors ORDER BY kind")
    assert [kind for kind, _ in errors] == ["malformed", "refusal", "timeout"]
    reasons = dict(
        warehouse.query("SELECT c.text, r.reason FROM review_queue r JOIN cases c USING (case_id)")
    )
    # The human said top_up_limits, the teacher top_up_failed; the rest is below 0.95.
    assert reasons == {
        "top up failed": "disagreement",
        "card ok": "low_confidence",
        "card low": "low_confidence",
    }
    # A rerun retries only the failed cases; the review queue is not duplicated.
    before = len(fake.requests)
    rerun = relabel(warehouse, _teacher(fake), review_below=0.95)
    assert rerun.pending == 3 and len(fake.requests) - before == 3
    assert rerun.review_items == 0


def test_cli_relabel_review_and_resolve(settings: Settings, fake: FakeOpenAI) -> None:
    warehouse = open_warehouse(settings)
    capture(warehouse, ["card one", "top up failed"], human_labels={0: "card_lost"})
    # No spot checks: with the default 10% one of the two random case ids is drawn for one
    # about every tenth run, and this test is about the disagreement item (spot checks have
    # their own tests).
    env = _env(settings, fake, TUTORLOOP_TEACHER__SPOT_CHECK_FRACTION="0")
    done = run_cli("teacher", "relabel", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["labeled"] == 2
    listed = run_cli("teacher", "review", "--json", env=env)
    [item] = json.loads(listed.stdout)
    assert (item["reason"], item["teacher_label"], item["human_label"]) == (
        "disagreement",
        "card_arrival",
        "card_lost",
    )
    bad = run_cli("teacher", "resolve", item["item_id"][:10], "--label", "nope", env=env)
    assert bad.returncode != 0 and "unknown label 'nope'" in bad.stderr
    ok = run_cli("teacher", "resolve", item["item_id"][:10], "--label", "card_arrival", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(run_cli("teacher", "review", "--json", env=env).stdout) == []
    human = warehouse.query(
        "SELECT label FROM labels WHERE source = 'human' AND label_id LIKE 'review-%'"
    )
    assert human == [("card_arrival",)]


def test_cli_exits_non_zero_only_when_nothing_could_be_labeled(
    settings: Settings, fake: FakeOpenAI
) -> None:
    warehouse = open_warehouse(settings)
    capture(warehouse, ["[malformed] a", "[refuse] b"])
    env = _env(settings, fake)
    failed = run_cli("teacher", "relabel", env=env)
    assert failed.returncode == 1
    assert "no case could be labeled" in failed.stderr
    capture(warehouse, ["card ok"])
    partly = run_cli("teacher", "relabel", env=env)
    assert partly.returncode == 0, partly.stderr
    assert "1/3 labeled" in partly.stdout


def test_a_killed_relabel_loses_nothing_and_repeats_no_answered_call(
    settings: Settings, fake: FakeOpenAI, tmp_path: Path
) -> None:
    warehouse = open_warehouse(settings)
    texts = [f"card number {i}" for i in range(24)]
    case_ids = capture(warehouse, texts)
    fake.hold_s = 0.15
    env = _env(settings, fake, TUTORLOOP_TEACHER__OPENAI__CONCURRENCY="2")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")} | env
    with (tmp_path / "relabel.log").open("w") as log:
        proc = subprocess.Popen([*CLI, "teacher", "relabel"], env=full_env, stdout=log, stderr=log)
        try:
            wait_until(
                lambda: warehouse.query("SELECT count(*) FROM labels")[0][0] >= 6, timeout=60
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    labeled_before = {cid for (cid,) in warehouse.query("SELECT case_id FROM labels")}
    assert 6 <= len(labeled_before) < len(texts)
    done = run_cli("teacher", "relabel", "--json", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    labels = warehouse.query("SELECT case_id FROM labels WHERE source = 'teacher'")
    assert sorted(cid for (cid,) in labels) == sorted(case_ids)  # nothing lost, no duplicate
    calls = Counter(r["text"] for r in fake.requests)
    answered_before = {t for t, cid in zip(texts, case_ids, strict=True) if cid in labeled_before}
    assert all(calls[t] == 1 for t in answered_before)
    # Only the calls in flight when the process died (concurrency 2) can repeat.
    assert sum(calls.values()) - len(texts) <= 2


class _ErasingTeacher:
    """The real endpoint teacher, with ``privacy forget`` of one user run while it answers:
    the erasure lands between the relabel job's read of the cases and its write."""

    def __init__(self, inner: OpenAITeacher, warehouse: Warehouse, user_id: str) -> None:
        self.inner, self.warehouse, self.user_id = inner, warehouse, user_id
        self.info = inner.info

    def label_batch(self, texts: Sequence[str]) -> list[TeacherResult]:
        forget(self.warehouse, self.user_id, tenant_id="acme", actor="test")
        return self.inner.label_batch(texts)


def test_a_relabel_running_during_forget_recreates_nothing_of_the_erased_user(
    warehouse: Warehouse, fake: FakeOpenAI
) -> None:
    texts = [f"my card {i} has not come" for i in range(4)] + ["top up failed again"]
    ids = capture(warehouse, texts, users=["erased", "erased", "kept", "kept", "erased"])
    erased_ids = [ids[0], ids[1], ids[4]]
    hashes = [
        r["text_hash"]
        for r in warehouse.query_dicts(
            "SELECT text_hash FROM cases WHERE case_id IN (SELECT unnest(?::VARCHAR[]))",
            [erased_ids],
        )
    ]
    report = relabel(warehouse, _ErasingTeacher(_teacher(fake), warehouse, "erased"))
    for table, column, values in [
        ("labels", "case_id", erased_ids),
        ("review_queue", "case_id", erased_ids),
        ("teacher_errors", "case_id", erased_ids),
        ("teacher_cache", "text_hash", hashes),
    ]:
        left = warehouse.query(
            f"SELECT count(*) FROM {table} WHERE {column} IN (SELECT unnest(?::VARCHAR[]))",
            [values],
        )
        assert left[0][0] == 0, table
    labeled = warehouse.query("SELECT count(*) FROM labels WHERE source = 'teacher'")
    assert labeled[0][0] == 2  # the kept user's cases are labeled as usual
    assert (report.pending, report.erased, report.labeled) == (5, 3, 2)
