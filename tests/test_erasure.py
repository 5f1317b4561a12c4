"""Erasure and retention on a real DuckDB file, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from tests.conftest import run_cli
from tests.openai_server import FakeOpenAI, serve
from tests.streams_events import escalation, prediction
from tests.warehouse_cases import capture, regex_sink
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.settings import Settings
from tutorloop.infra.settings_teacher import OpenAITeacherSettings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.relabel import relabel
from tutorloop.labeling.teacher_openai import OpenAITeacher
from tutorloop.privacy.erasure import RetentionError, forget, parse_duration, purge
from tutorloop.privacy.snapshot_erasure import rewrite_snapshot
from tutorloop.streams.batch import RawRecord, RecordFetcher
from tutorloop.streams.sink import CaptureSink
from tutorloop.trainer.dataset import DatasetSpec
from tutorloop.trainer.dataset_store import build_dataset

ALICE_TEXT = "Alicecanary wants to close her account"
BOB_TEXT = "Bobcanary asks about exchange rates"


def _env(wh: Warehouse) -> dict[str, str]:
    url = getattr(wh, "url", None)  # the PostgreSQL warehouse
    return {"TUTORLOOP_WAREHOUSE__URL": url} if url else {"TUTORLOOP_WAREHOUSE__PATH": str(wh.path)}


def _sink(warehouse: Warehouse, fetcher: RecordFetcher | None = None) -> CaptureSink:
    return regex_sink(warehouse, fetcher=fetcher)


@pytest.fixture
def populated(warehouse: Warehouse) -> Warehouse:
    sink = _sink(warehouse)
    alice = [
        prediction(confidence=0.2, user_id="alice", text=f"{ALICE_TEXT} {i}") for i in range(3)
    ]
    bob = [prediction(confidence=0.2, user_id="bob", text=BOB_TEXT)]
    sink.write_predictions([RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(alice + bob)])
    sink.write_escalations([RawRecord(escalation(alice[0].request_id, "close_account").to_bytes())])
    with warehouse.transaction() as con:
        # A dataset and a model that used one of Alice's cases and Bob's.
        con.execute("INSERT INTO dataset_versions VALUES ('ds1', now(), '{}', '{}', 2, 0, 0, 'x')")
        for case_id in (str(alice[1].event_id), str(bob[0].event_id)):
            con.execute(
                "INSERT INTO dataset_members VALUES ('ds1', ?, 'train', 'l', 'teacher')", [case_id]
            )
        con.execute(
            "INSERT INTO training_runs (run_id, started_at, status, dataset_hash, base_model, "
            "quantization, config, seed, package_versions, hardware) "
            "VALUES ('run1', now(), 'succeeded', 'ds1', 'minilm', 'nf4', '{}', 1, '{}', '{}')"
        )
        con.execute(
            "INSERT INTO model_versions (version, run_id, status, artifact_dir, "
            "label_set, card) VALUES ('v2', 'run1', 'champion', 'x', '[]', '{}')"
        )
    return warehouse


def test_forget_erases_the_user_and_names_what_to_retrain(populated: Warehouse) -> None:
    wh = populated
    assert ALICE_TEXT.encode() in wh.path.read_bytes()
    result = run_cli(
        "privacy",
        "forget",
        "--user",
        "alice",
        "--tenant",
        "acme",
        "--actor",
        "dpo",
        "--json",
        env=_env(wh),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["cases_deleted"], report["labels_deleted"], report["escalations_deleted"]) == (
        3,
        1,
        1,
    )
    assert report["dataset_versions"] == ["ds1"]
    assert report["model_versions"] == ["v2"]
    assert wh.query("SELECT count(*) FROM cases WHERE user_id = 'alice'") == [(0,)]
    assert wh.query("SELECT count(*) FROM cases WHERE user_id = 'bob'") == [(1,)]
    # Gone from the file itself, not only from query results.
    raw = wh.path.read_bytes()
    assert ALICE_TEXT.encode() not in raw
    assert BOB_TEXT.encode() in raw
    [(subject, actor)] = wh.query("SELECT user_id, actor FROM erasures")
    assert subject == subject_hash("alice") and actor == "dpo"
    # Kafka keeps the raw events until the topics' retention (72 h by default) drops them:
    # the record says by when.
    expires = datetime.fromisoformat(report["broker_copy_expires_at"])
    expected = datetime.now(UTC) + timedelta(hours=72)
    assert abs((expires - expected).total_seconds()) < 60
    [(stored,)] = wh.query("SELECT broker_expires_at FROM erasures")
    assert abs((stored - expires).total_seconds()) < 1

    lineage = json.loads(run_cli("lineage", "model", "v2", "--json", env=_env(wh)).stdout)
    assert [e["erasure_id"] for e in lineage["retrain_required"]] == [report["erasure_id"]]
    again = json.loads(
        run_cli(
            "privacy", "forget", "--user", "alice", "--tenant", "acme", "--json", env=_env(wh)
        ).stdout
    )
    assert again["cases_deleted"] == 0
    assert again["dataset_versions"] == ["ds1"] and again["model_versions"] == ["v2"]


def test_purge_deletes_only_what_is_older_than_the_cutoff(populated: Warehouse) -> None:
    wh = populated
    old = datetime.now(UTC) - timedelta(days=120)
    with wh.transaction() as con:
        con.execute("UPDATE cases SET captured_at = ? WHERE user_id = 'bob'", [old])
        con.execute("UPDATE predictions_audit SET ingested_at = ? WHERE user_id = 'bob'", [old])
    dry = json.loads(
        run_cli(
            "privacy", "purge", "--older-than", "90d", "--dry-run", "--json", env=_env(wh)
        ).stdout
    )
    assert dry["deleted"]["cases"] == 1 and dry["dry_run"] is True
    assert wh.query("SELECT count(*) FROM cases") == [(4,)]
    done = json.loads(
        run_cli("privacy", "purge", "--older-than", "90d", "--json", env=_env(wh)).stdout
    )
    assert done["deleted"]["cases"] == 1 and done["deleted"]["predictions_audit"] == 1
    assert wh.query("SELECT DISTINCT user_id FROM cases") == [("alice",)]
    assert BOB_TEXT.encode() not in wh.path.read_bytes()
    rerun = json.loads(
        run_cli("privacy", "purge", "--older-than", "90d", "--json", env=_env(wh)).stdout
    )
    assert sum(rerun["deleted"].values()) == 0


@pytest.mark.parametrize("bad", ["90", "d", "0d", "-3d", "ninety days"])
def test_bad_durations_are_one_line_errors(bad: str) -> None:
    with pytest.raises(RetentionError, match="invalid duration"):
        parse_duration(bad)
    result = run_cli("privacy", "purge", "--older-than", bad)
    assert result.returncode == 2
    assert "invalid duration" in result.stderr and "Traceback" not in result.stderr


_COMPACT = """
import logging, sys
from pathlib import Path
from tutorloop.infra.warehouse import Warehouse
logging.basicConfig(level=logging.INFO)
before, after = Warehouse(Path(sys.argv[1])).compact()
print(before, after)
"""


def test_urgent_work_preempts_a_running_compaction(tmp_path: Path) -> None:
    # A file big enough that copying it takes seconds; the urgent connection gives up after
    # 1 s, which it could only meet if the compaction stepped aside.
    wh = Warehouse(tmp_path / "w.duckdb", lock_timeout_s=60)
    with wh.transaction() as con:
        con.execute("CREATE TABLE filler AS SELECT i, repeat(md5(i::VARCHAR), 8) AS t"
                    " FROM range(3000000) r(i)")  # fmt: skip
    with wh.transaction() as con:
        con.execute("DELETE FROM filler WHERE i % 2 = 0")
    compaction = subprocess.Popen(
        [sys.executable, "-c", _COMPACT, str(wh.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60

    def copying() -> bool:
        return any(wh.path.parent.glob(f"{wh.path.name}.compacting*"))

    while not copying() and compaction.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert compaction.poll() is None, "the compaction ended before the urgent work came"
    time.sleep(0.2)
    with wh.urgent(), wh.connect(timeout_s=1.0) as con:
        assert con.execute("SELECT count(*) FROM filler").fetchall() == [(1500000,)]
    out, err = compaction.communicate(timeout=120)
    assert compaction.returncode == 0, err
    assert "interrupted by urgent work" in err  # it stepped aside, then finished
    before, after = map(int, out.split())
    assert after < before
    assert wh.query("SELECT count(*), sum(i) FROM filler") == [(1500000, 1500000**2)]


def test_durations() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("36h") == timedelta(hours=36)


def test_compaction_waits_for_open_connections_and_keeps_everything(
    populated: Warehouse,
) -> None:
    wh = populated
    before = wh.query("SELECT count(*) FROM predictions_audit")
    released = threading.Event()

    def hold() -> None:
        with wh.connect():
            time.sleep(0.8)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    wh.compact()
    assert released.is_set()  # compaction waited for the open connection to close
    holder.join()
    assert wh.query("SELECT count(*) FROM predictions_audit") == before
    with pytest.raises(Exception, match="Constraint"), wh.transaction() as con:
        row = con.execute("SELECT event_id FROM predictions_audit LIMIT 1").fetchone()
        assert row is not None
        con.execute(
            "INSERT INTO predictions_audit SELECT * FROM predictions_audit WHERE event_id = ?",
            [row[0]],
        )


class _Replay:
    """A fetcher that still has the erased user's raw prediction, as Kafka does until retention."""

    def __init__(self, raw: dict[tuple[int, int], bytes]) -> None:
        self.raw = raw

    def fetch(self, partition: int, offset: int) -> bytes | None:
        return self.raw.get((partition, offset))


def test_an_erased_user_stays_erased_through_replays_and_late_escalations(
    any_warehouse: Warehouse,
) -> None:
    warehouse = any_warehouse
    carol = [prediction(confidence=0.2, user_id="carol", text=f"Carolcanary {i}") for i in range(2)]
    # Not captured (confident), escalated only after the erasure: re-read from "Kafka".
    confident = prediction(confidence=0.99, second=0.0, user_id="carol", text="Carolcanary late")
    dave = prediction(confidence=0.2, user_id="dave", text="Davecanary stays")
    records = [RawRecord(e.to_bytes(), 0, i) for i, e in enumerate([*carol, confident, dave])]
    sink = _sink(warehouse, _Replay({(0, 2): confident.to_bytes()}))
    sink.write_predictions(records)
    forgot = run_cli(
        "privacy",
        "forget",
        "--user",
        "carol",
        "--tenant",
        "acme",
        "--actor",
        "dpo",
        env=_env(warehouse),
    )
    assert forgot.returncode == 0, forgot.stderr

    replay = sink.write_predictions(records)  # a worker restarted before committing offsets
    new = prediction(confidence=0.2, user_id="carol", text="Carolcanary again")
    fresh = sink.write_predictions([RawRecord(new.to_bytes(), 0, 9)])
    late = sink.write_escalations(
        [RawRecord(escalation(confident.request_id, "close_account").to_bytes(), 0, 0)]
    )
    # The late escalation's owner is erased: it is dropped before its prediction is re-read.
    assert replay.erased == 2 and fresh.erased == 1 and late.erased == 1
    cases = warehouse.query("SELECT user_id, text FROM cases")
    assert [u for u, _ in cases] == ["dave"]
    assert not warehouse.query("SELECT * FROM escalations")
    assert not warehouse.query("SELECT * FROM labels")
    # Dave, never erased, is untouched; an event of a new user is still captured.
    other = sink.write_predictions(
        [RawRecord(prediction(confidence=0.2, user_id="erin").to_bytes(), 0, 10)]
    )
    assert other.erased == 0 and sum(other.captured.values()) == 1


def test_forget_reaches_dataset_snapshots_and_the_teacher_cache(
    settings: Settings, any_warehouse: Warehouse
) -> None:
    # On PostgreSQL the rows' bytes are not under the data dir: tests/test_warehouse_postgres.py
    # looks for them in the server's files.
    warehouse = any_warehouse
    canary = "zqxcanary"
    alice = [f"{canary} wants the card {w}" for w in ("blue", "green", "red")]
    bob = [f"bob asks about the card {w}" for w in ("grey", "pink", "gold", "teal")]
    ids = capture(warehouse, alice + bob, users=["alice"] * 3 + ["bob"] * 4)
    with serve(FakeOpenAI(rules=[("card", "card_arrival")], fallback="card_lost")) as fake:
        cfg = OpenAITeacherSettings(base_url=fake.url, model="m", logprobs=False)
        assert relabel(warehouse, OpenAITeacher(cfg, ("card_arrival", "card_lost"))).failed == 0
    spec = DatasetSpec(labels=("card_arrival", "card_lost"), eval_fraction=0.0,
                       eval_min_per_label=0, eval_min_oos=0)  # fmt: skip
    old = build_dataset(warehouse, spec, settings.datasets_dir)
    assert any(canary.encode() in p.read_bytes() for p in old.path.rglob("*") if p.is_file())

    report = forget(warehouse, "alice", tenant_id="acme", actor="dpo", broker_retention_hours=72)
    # No byte of Alice's text is left under the data directory: warehouse file, snapshots.
    leftovers = [
        p for p in settings.data_dir.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()
    ]
    assert leftovers == []
    # The old snapshot is a tombstone naming its successor; the successor keeps Bob's rows.
    new_hash = report.dataset_successors[old.dataset_hash]  # type: ignore[index]
    assert [p.name for p in old.path.iterdir()] == ["ERASED.json"]
    assert json.loads((old.path / "ERASED.json").read_text())["successor"] == new_hash
    successor = load_from_disk(str(settings.datasets_dir / new_hash))
    assert sorted(successor["case_id"]) == sorted(ids[3:])
    members = warehouse.query(
        "SELECT count(*) FROM dataset_members WHERE dataset_hash = ?", [new_hash]
    )
    assert members == [(4,)]
    [(counts,)] = warehouse.query(
        "SELECT counts FROM dataset_versions WHERE dataset_hash = ?", [new_hash]
    )
    assert json.loads(counts)["derived_from"] == old.dataset_hash
    # The teacher's cached answers (and rationales) for her texts are gone; Bob's stay.
    assert report.teacher_cache_deleted == 3
    assert warehouse.query("SELECT count(*) FROM teacher_cache") == [(4,)]
    # Rerunning finds nothing left to rewrite.
    again = forget(warehouse, "alice", tenant_id="acme", actor="dpo")
    assert again.cases_deleted == 0 and again.dataset_successors == {}


@pytest.mark.parametrize("erased", [[0, 1, 5, 6], [0, 1, 2], [6], [3]])
def test_a_rewritten_snapshot_holds_no_byte_of_the_erased_rows(
    tmp_path: Path, erased: list[int]
) -> None:
    # Kept rows that form one contiguous run are an Arrow slice of the old table; saving a
    # slice writes its whole string buffer, so this is where erased text would survive.
    texts = [f"{'zqxcanary' if i in erased else 'bob'} row {i}" for i in range(7)]
    Dataset.from_dict({"case_id": [f"c{i}" for i in range(7)], "text": texts,
                       "split": ["train"] * 7}).save_to_disk(str(tmp_path / "old"))  # fmt: skip
    rewritten = rewrite_snapshot("old", tmp_path / "old", {f"c{i}" for i in erased})
    assert rewritten is not None and rewritten.removed == len(erased)
    files = [p for p in rewritten.path.rglob("*") if p.is_file()]
    assert files and not any(b"zqxcanary" in p.read_bytes() for p in files)
    assert load_from_disk(str(rewritten.path))["text"] == [
        t for i, t in enumerate(texts) if i not in erased
    ]


def test_forget_is_scoped_to_one_tenant_unless_told_every_tenant(warehouse: Warehouse) -> None:
    # The same user id in two tenants is two people: erasing one leaves the other.
    sink = _sink(warehouse)
    events = [
        prediction(confidence=0.2, user_id="alice", tenant_id=tenant, text=f"{tenant}canary {i}")
        for tenant in ("acme", "globex")
        for i in range(2)
    ]
    sink.write_predictions([RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(events)])
    env = _env(warehouse)
    both = run_cli(
        "privacy", "forget", "--user", "alice", "--tenant", "acme", "--all-tenants", env=env
    )
    assert both.returncode == 2 and "--tenant or --all-tenants" in both.stderr
    assert len(both.stderr.strip().splitlines()) == 1
    acme = run_cli("privacy", "forget", "--user", "alice", "--tenant", "acme", "--json", env=env)
    assert acme.returncode == 0, acme.stderr
    assert json.loads(acme.stdout)["cases_deleted"] == 2
    assert json.loads(acme.stdout)["tenant_id"] == "acme"
    assert json.loads(acme.stdout)["other_tenants"] == ["globex"]
    assert "also has cases in tenant(s) globex, not erased" in acme.stderr
    assert warehouse.query("SELECT tenant_id, count(*) FROM cases GROUP BY 1") == [("globex", 2)]
    # Replays: acme's Alice stays erased, globex's Alice is still captured.
    again = [
        prediction(confidence=0.2, user_id="alice", tenant_id=tenant, text=f"{tenant}canary new")
        for tenant in ("acme", "globex")
    ]
    replay = sink.write_predictions(
        [RawRecord(e.to_bytes(), 0, 10 + i) for i, e in enumerate(again)]
    )
    assert replay.erased == 1
    assert warehouse.query("SELECT tenant_id, count(*) FROM cases GROUP BY 1") == [("globex", 3)]

    every = run_cli("privacy", "forget", "--user", "alice", "--all-tenants", "--json", env=env)
    assert json.loads(every.stdout)["cases_deleted"] == 3
    assert json.loads(every.stdout)["tenant_id"] is None
    assert warehouse.query("SELECT count(*) FROM cases") == [(0,)]
    raw = warehouse.path.read_bytes()
    assert b"acmecanary" not in raw and b"globexcanary" not in raw


def test_forget_takes_escalations_of_uncaptured_predictions_and_the_raw_id_from_the_audit(
    warehouse: Warehouse,
) -> None:
    sink = _sink(warehouse)
    # No consent: audited without text, never a case; the escalation still carries a reason
    # and a human label, which are Alice's.
    unconsented = prediction(confidence=0.2, user_id="alice", consent=False)
    bob = prediction(confidence=0.2, user_id="bob", consent=False)
    sink.write_predictions(
        [RawRecord(e.to_bytes(), 0, i) for i, e in enumerate([unconsented, bob])]
    )
    escalations = [escalation(e.request_id, "close_account") for e in (unconsented, bob)]
    sink.write_escalations([RawRecord(e.to_bytes(), 0, i) for i, e in enumerate(escalations)])
    assert warehouse.query("SELECT count(*) FROM escalations WHERE case_id IS NULL") == [(2,)]
    report = forget(warehouse, "alice", tenant_id="acme", actor="dpo")
    assert report.escalations_deleted == 1
    assert warehouse.query("SELECT request_id FROM escalations") == [(bob.request_id,)]
    # The audit keeps that a prediction was made, not who it was for.
    audit = dict(warehouse.query("SELECT request_id, user_id FROM predictions_audit"))
    assert audit == {unconsented.request_id: f"erased:{report.erasure_id}", bob.request_id: "bob"}
    assert b"alice" not in warehouse.path.read_bytes()
    # A late escalation of her prediction is still recognized as hers, and dropped.
    late = sink.write_escalations(
        [RawRecord(escalation(unconsented.request_id, "card_lost").to_bytes(), 0, 5)]
    )
    assert late.erased == 1 and late.escalations == 0
    # An id shaped like a pseudonym is still an id: erased, it stays erased.
    odd = prediction(confidence=0.2, user_id="erased:odd", text="Oddcanary")
    sink.write_predictions([RawRecord(odd.to_bytes(), 0, 7)])
    forget(warehouse, "erased:odd", tenant_id="acme", actor="dpo")
    assert sink.write_predictions([RawRecord(odd.to_bytes(), 0, 8)]).erased == 1


def test_purge_reaches_dataset_snapshots_teacher_answers_and_errors(
    settings: Settings, any_warehouse: Warehouse
) -> None:
    warehouse = any_warehouse
    canary = "zqxoldcanary"
    old_texts = [f"{canary} wants the card {w}" for w in ("blue", "green")]
    new_texts = [f"bob asks about the card {w}" for w in ("grey", "pink", "gold")]
    ids = capture(warehouse, old_texts + new_texts, users=["ann"] * 2 + ["bob"] * 3)
    with serve(FakeOpenAI(rules=[("card", "card_arrival")], fallback="card_lost")) as fake:
        cfg = OpenAITeacherSettings(base_url=fake.url, model="m", logprobs=False)
        assert relabel(warehouse, OpenAITeacher(cfg, ("card_arrival", "card_lost"))).failed == 0
    spec = DatasetSpec(
        labels=("card_arrival", "card_lost"),
        eval_fraction=0.0,
        eval_min_per_label=0,
        eval_min_oos=0,
    )
    snapshot = build_dataset(warehouse, spec, settings.datasets_dir)
    long_ago = datetime.now(UTC) - timedelta(days=120)
    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO teacher_errors (error_id, case_id, teacher_id, kind, message, ts)"
            " VALUES ('e1', ?, 't', 'parse', ?, ?)",
            [ids[0], f"unparseable answer about {canary}", long_ago],
        )
        con.execute("UPDATE cases SET captured_at = ? WHERE user_id = 'ann'", [long_ago])
        con.execute("UPDATE teacher_cache SET created_at = ?", [long_ago])  # every answer

    report = purge(warehouse, timedelta(days=90))
    assert report.deleted["cases"] == 2 and report.deleted["teacher_errors"] == 1
    assert report.deleted["teacher_cache"] == 2  # Bob's answers stay: his cases are recent
    assert warehouse.query("SELECT count(*) FROM teacher_cache") == [(3,)]
    new_hash = report.dataset_successors[snapshot.dataset_hash]  # type: ignore[index]
    assert report.deleted["dataset_snapshots"] == 1
    assert [p.name for p in snapshot.path.iterdir()] == ["ERASED.json"]
    successor = load_from_disk(str(settings.datasets_dir / new_hash))
    assert sorted(successor["case_id"]) == sorted(ids[2:])
    leftovers = [
        p for p in settings.data_dir.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()
    ]
    assert leftovers == []
    again = purge(warehouse, timedelta(days=90))
    assert sum(again.deleted.values()) == 0 and again.dataset_successors == {}
