"""Erasure end to end: a user's canary goes through the broker, the worker, relabelling, a
dataset build and a training run; after ``privacy forget`` no byte of it is left under the data
directory, and replaying the user's events or escalating them late inserts nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.conftest import WorkerProcess, make_stream_env, run_cli, wait_until
from tests.streams_events import prediction
from tests.test_trainer import TEST, TINY, TRAIN
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.topics import ensure_topics
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.teacher_local import fit_local_teacher
from tutorloop.loop.cycle import bootstrap, run_cycle, sample_per_label
from tutorloop.registry.lifecycle import promote
from tutorloop.streams.emitter import PredictionEmitter
from tutorloop.streams.events import EscalationEvent, PredictionEvent, now_utc

CANARY = "zqxcanary"


def _loop_settings(base: Settings) -> Settings:
    return load_settings(
        data_dir=base.data_dir,
        broker=base.broker.model_dump(),
        warehouse={"lock_timeout_s": 20.0},
        trainer=TINY,
        privacy={"scrubber": "regex"},
        registry={"gate_after_training": False},
        teacher={"encoder": "all-minilm-l6-v2"},
    )


def _leaks(roots: list[Path]) -> list[str]:
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*"))]
    return [str(p) for p in files if p.is_file() and CANARY.encode() in p.read_bytes()]


def _captured(warehouse: Warehouse) -> list[tuple[str, int]]:
    """Captured cases per production user (the seed's imported gold rows aside)."""
    return [
        (str(user), int(n))
        for user, n in warehouse.query(
            "SELECT user_id, count(*) FROM cases WHERE capture_reason != 'gold_import'"
            " GROUP BY user_id ORDER BY user_id"
        )
    ]


def _escalation(event: PredictionEvent, label: str, text: str | None) -> EscalationEvent:
    return EscalationEvent(
        event_id=uuid.uuid4(), ts=now_utc(), request_id=event.request_id,
        reason="customer_escalation", human_label=label, actor="agent-1", text=text,
    )  # fmt: skip


def test_an_erased_user_leaves_no_byte_behind_and_stays_erased(
    settings: Settings, group_id: str, tmp_path: Path
) -> None:
    cfg = _loop_settings(settings)
    warehouse = open_warehouse(cfg)
    train, test = read_labeled_csv(TRAIN), read_labeled_csv(TEST)
    fit_local_teacher(train, cfg.teacher_path, encoder="all-minilm-l6-v2",
                      models_dir=cfg.models_dir)  # fmt: skip
    seed = bootstrap(cfg, warehouse, sample_per_label(train, 10, 0), source="seed", actor="t")
    assert seed.version is not None
    promote(warehouse, cfg, seed.version, actor="t", reason="seed", force=True)

    # Alice's queries carry the canary; Bob's do not. All unsure, so all captured. One of
    # Alice's is confident: serving sends it without text, her escalation carries it.
    alice = [prediction(confidence=0.2, user_id="alice", text=f"{CANARY} {t}")
             for t in test.texts[:6]]  # fmt: skip
    bob = [prediction(confidence=0.2, user_id="bob", text=t) for t in test.texts[6:46]]
    sure = prediction(confidence=0.99, user_id="alice", text=f"{CANARY} {test.texts[46]}")
    ensure_topics(cfg, cfg.broker.bootstrap_servers)
    worker = WorkerProcess(make_stream_env(cfg, group_id), tmp_path / "worker.log")
    try:
        worker.wait_ready()
        with PredictionEmitter.from_settings(cfg) as emitter:
            for event in [*alice, *bob, sure]:
                emitter.emit(event)
            emitter.flush(10)
            emitter.escalate(_escalation(sure, test.labels[46], sure.text))
        wait_until(lambda: _captured(warehouse) == [("alice", 7), ("bob", 40)], 120)

        report = run_cycle(cfg, warehouse)  # relabel, dataset, training run
        assert report.version is not None
        assert _leaks([cfg.datasets_dir]), "the dataset snapshot should hold the canary"

        forget = ["privacy", "forget", "--user", "alice", "--tenant", "acme", "--actor", "dpo"]
        result = run_cli(*forget, "--json", env={"TUTORLOOP_DATA_DIR": str(cfg.data_dir)})
        erased = json.loads(result.stdout)
        assert erased["cases_deleted"] == 7
        assert erased["broker_copy_expires_at"] is not None  # Kafka's copy: until then
        assert report.version in erased["model_versions"]  # retrain required
        assert _leaks([cfg.data_dir, worker.log_path]) == []

        # A replay of her events and a late escalation insert nothing.
        with PredictionEmitter.from_settings(cfg) as emitter:
            for event in [*alice, sure]:
                emitter.emit(event)
            emitter.escalate(_escalation(alice[0], test.labels[0], alice[0].text))
        # Six cases of the replay, and the escalation, whose owner is erased: it is dropped
        # before its prediction would be re-read.
        wait_until(lambda: worker.totals().get("erased_skipped", 0) >= 7, 60)
        assert _captured(warehouse) == [("bob", 40)]
    finally:
        assert worker.stop() == 0
    assert _leaks([cfg.data_dir, worker.log_path]) == []
