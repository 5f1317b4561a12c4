"""Erasure reaching models, against a real S3 server (SeaweedFS): the champion trained on an
erased user's rows gets its row-derived files rebuilt without them, locally and in the store
(the replaced blobs deleted), is republished; a rollback to it needs --force --reason; and the
next retrain does not warm-start from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import run_cli
from tests.registry_fixtures import first_version, registry_settings
from tests.test_trainer import TRAIN
from tests.warehouse_cases import capture
from tutorloop.infra.local_processes import free_port, stop_process
from tutorloop.infra.local_s3 import KEY, SECRET, S3State, start_local_s3
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.loop.cycle import run_cycle, sample_per_label
from tutorloop.registry.erasure_marks import marked_versions
from tutorloop.registry.lifecycle import promote
from tutorloop.registry.onnx_model import OPEN_SET
from tutorloop.registry.rollout import judge
from tutorloop.registry.store import champion, get

BUCKET = "models"
CANARY = "Zqxcanary"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3State]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    port = free_port(with_offset=10000)
    log_file = tmp_path / "seaweedfs.log"
    state = start_local_s3(tmp_path / "s3", port=port, bucket=BUCKET, log_file=log_file)
    yield state
    stop_process(state.pid, "weed")


def _bucket(s3: S3State) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _env(settings: Settings, s3: S3State) -> dict[str, str]:
    return {
        "TUTORLOOP_DATA_DIR": str(settings.data_dir),
        "TUTORLOOP_REGISTRY__ARTIFACT_STORE": f"s3://{BUCKET}/tutorloop",
        "TUTORLOOP_REGISTRY__S3_ENDPOINT_URL": s3.endpoint,
        "TUTORLOOP_PRIVACY__SCRUBBER": "regex",
        "TUTORLOOP_TEACHER__BACKEND": "human",
    }


@pytest.mark.timeout(900)
def test_forget_rebuilds_the_champions_row_derived_files_and_keeps_it_from_coming_back(
    tmp_path: Path, s3: S3State
) -> None:
    settings = registry_settings(
        tmp_path / "d", artifact_store=f"s3://{BUCKET}/tutorloop", s3_endpoint_url=s3.endpoint
    )
    first_version(settings)
    warehouse = open_warehouse(settings)
    v1 = champion(warehouse)
    assert v1 is not None
    train = read_labeled_csv(TRAIN)
    seed = set(sample_per_label(train, 30, 0).texts)  # v1's rows (registry_fixtures)
    fresh = [i for i, text in enumerate(train.texts) if text not in seed]  # 80 rows
    texts, labels = [train.texts[i] for i in fresh[:56]], [train.labels[i] for i in fresh[:56]]
    users = ["alice"] * 10 + [f"u-{i}" for i in range(46)]
    marked = [f"{CANARY} {t}" if u == "alice" else t for t, u in zip(texts, users, strict=True)]
    capture(warehouse, marked, users=users, human_labels=dict(enumerate(labels)))
    report = run_cycle(settings, warehouse)
    assert report.version is not None
    v2 = get(warehouse, report.version)
    if champion(warehouse) != v2:
        promote(warehouse, settings, v2.version, actor="t", reason="test", force=True)
    before = json.loads((v2.artifact_dir / "card.json").read_text())
    assert before["open_set"]["fitted"], before["open_set"]
    [(alice_train,)] = warehouse.query(
        "SELECT count(*) FROM dataset_members m JOIN cases c USING (case_id)"
        " WHERE m.dataset_hash = ? AND m.split = 'train' AND c.user_id = 'alice'",
        [v2.dataset_hash],
    )
    assert alice_train > 0
    old_blob = f"tutorloop/blobs/sha256/{before['files'][OPEN_SET]}"
    assert old_blob in _bucket(s3)

    env = _env(settings, s3)
    forgot = run_cli("privacy", "forget", "--user", "alice", "--tenant", "acme", "--json", env=env)
    assert forgot.returncode == 0, forgot.stderr
    models = json.loads(forgot.stdout)["models"]
    assert v2.version in models["marked"] and v1.version not in models["marked"]
    assert models["refitted"] == [v2.version] and models["republished"] == v2.version
    assert models["blobs_deleted"] >= 1

    after = json.loads((v2.artifact_dir / "card.json").read_text())
    assert after["open_set"]["train_rows"] == before["open_set"]["train_rows"] - alice_train
    bucket = _bucket(s3)
    assert old_blob not in bucket  # the file fitted on her rows is gone from the store
    assert f"tutorloop/blobs/sha256/{after['files'][OPEN_SET]}" in bucket
    pointer = json.loads(bucket["tutorloop/champion.json"])
    card = (v2.artifact_dir / "card.json").read_bytes()
    assert pointer["card_sha256"] == hashlib.sha256(card).hexdigest()
    leaks = [k for k, body in bucket.items() if CANARY.encode() in body]
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert leaks == [] and [p for p in files if CANARY.encode() in p.read_bytes()] == []

    # Back to v1, then on-call tries to return to v2, by promotion and by rollback.
    assert run_cli("registry", "rollback", "--to", v1.version, env=env).returncode == 0
    promoted = run_cli("registry", "promote", v2.version, env=env)
    assert promoted.returncode != 0 and "erased user" in promoted.stderr
    refused = run_cli("registry", "rollback", "--to", v2.version, env=env)
    assert refused.returncode != 0 and "erased user" in refused.stderr
    # A canary of it (forced past the mark) is ended by the judge, never promoted by the clock.
    canary = ["registry", "promote", v2.version, "--canary", "10", "--force", "--reason", "test"]
    assert run_cli(*canary, "--auto-promote-after", "1s", env=env).returncode == 0
    ended = judge(warehouse, settings)
    assert ended is not None and ended.action == "rollout_abort" and "erased" in str(ended.reason)
    assert champion(warehouse) == get(warehouse, v1.version)
    forced = ["registry", "rollback", "--to", v2.version, "--force", "--reason", "incident 7"]
    assert run_cli(*forced, env=env).returncode == 0

    more = fresh[56:]
    more_labels = {n: train.labels[i] for n, i in enumerate(more)}
    more_users = [f"w-{i}" for i in range(len(more))]
    capture(warehouse, [train.texts[i] for i in more], users=more_users, human_labels=more_labels)
    retrain = run_cycle(settings, warehouse)  # the champion v2 is marked: from v1 instead
    assert retrain.warm_start_passed_over == [v2.version]
    assert retrain.version is not None
    assert get(warehouse, retrain.version).card["warm_start_from"] == v1.version
    lineage = run_cli("lineage", "user", "alice", "--json", env=env)
    assert lineage.returncode == 0, lineage.stderr
    [erasure] = json.loads(lineage.stdout)["erasures"]
    assert erasure["models"]["rebuilt_without_the_user"] == [v2.version]
    assert erasure["models"]["trained_since"] == [
        {"version": retrain.version, "warm_start_from": v1.version}
    ]


def test_a_version_registered_from_an_erased_dataset_or_warm_started_from_a_marked_one_is_marked(
    any_warehouse: Warehouse,
) -> None:
    """A run that was training when the user was erased registers after the record was made."""
    with any_warehouse.transaction() as con:
        for run_id, dataset in [("r1", "d-erased"), ("r2", "d-clean"), ("r3", "d-clean")]:
            con.execute(
                "INSERT INTO training_runs (run_id, started_at, status, dataset_hash, base_model,"
                " quantization, config, seed, package_versions, hardware)"
                " VALUES (?, now(), 'succeeded', ?, 'm', 'none', '{}', 0, '{}', '{}')",
                [run_id, dataset],
            )
        parents = {"v1": None, "v2": "v1", "v3": None}
        for n, (version, parent) in enumerate(parents.items(), 1):
            con.execute(
                "INSERT INTO model_versions (version, run_id, status, artifact_dir, label_set,"
                " card) VALUES (?, ?, 'candidate', '/nowhere', '[]', ?)",
                [version, f"r{n}", json.dumps({"warm_start_from": parent})],
            )
        con.execute(
            "INSERT INTO erasures (erasure_id, ts, user_id, actor, cases_deleted, labels_deleted,"
            " dataset_versions, model_versions) VALUES ('e1', now(), 'h', 'dpo', 1, 0,"
            " '[\"d-erased\"]', '[]')"
        )
    assert marked_versions(any_warehouse) == {"v1": ["e1"], "v2": ["e1"]}
