"""The S3-compatible artifact store against a real S3 server (SeaweedFS, started here): two
serving replicas with data dirs of their own follow a promotion and a rollback made on the
registry's host; identical files are stored once; a tampered blob is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from tests.conftest import on_postgres, wait_until
from tests.registry_fixtures import first_version, register_copy, registry_settings
from tutorloop.infra.local_processes import free_port, stop_process
from tutorloop.infra.local_s3 import KEY, SECRET, S3State, start_local_s3
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry.artifact_store import ArtifactStore
from tutorloop.registry.lifecycle import promote, rollback
from tutorloop.registry.store import get
from tutorloop.serving.server import serving

BUCKET = "models"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3State]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    state = start_local_s3(tmp_path / "s3", port=free_port(with_offset=10000), bucket=BUCKET,
                           log_file=tmp_path / "seaweedfs.log")  # fmt: skip
    yield state
    stop_process(state.pid, "weed")


def _host(data_dir: Path, s3: S3State, warehouse_url: str | None = None) -> Settings:
    """One host: its own data dir; the store (and the warehouse, when given) shared."""
    cfg = registry_settings(data_dir, artifact_store=f"s3://{BUCKET}/tutorloop",
                            s3_endpoint_url=s3.endpoint)  # fmt: skip
    cfg = on_postgres(cfg, warehouse_url)
    return cfg.model_copy(update={"serving": cfg.serving.model_copy(
        update={"reload_poll_s": 0.2})})  # fmt: skip


def _blobs(s3: S3State) -> int:
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    return int(client.list_objects_v2(Bucket=BUCKET, Prefix="tutorloop/blobs/")["KeyCount"])


def test_replicas_follow_promotion_and_rollback_through_the_store(
    tmp_path: Path, s3: S3State, caplog: pytest.LogCaptureFixture, backend_url: str | None
) -> None:
    """With PostgreSQL, three hosts share nothing but the warehouse server and the S3 store:
    the trainer/registry host and two serving replicas, each with its own data dir."""
    registry = _host(tmp_path / "registry", s3, backend_url)
    first_version(registry)  # trained, gated and promoted here: v1 goes to the store
    warehouse = open_warehouse(registry)
    store = ArtifactStore.from_settings(registry)
    assert store is not None and store.read_pointer("champion.json")["version"] == "v1"  # type: ignore[index]
    blobs = _blobs(s3)
    same = register_copy(warehouse, registry, "v1", shift=0.0)
    other = register_copy(warehouse, registry, "v1", shift=5.0)
    replicas = [_host(tmp_path / name, s3, backend_url) for name in ("replica-a", "replica-b")]
    with serving(replicas[0], port=0) as a, serving(replicas[1], port=0) as b:

        def versions() -> list[str | None]:
            return [httpx.post(f"{s.url}/predict", json={"text": "card"}).json()["model_version"]
                    for s in (a, b)]  # fmt: skip

        assert versions() == ["v1", "v1"]  # fetched from the store: no local artifacts there
        assert not (replicas[0].models_artifacts_dir / "v1").exists()
        promote(warehouse, registry, same, actor="test", reason="test", force=True)
        wait_until(lambda: versions() == [same, same], timeout=10, interval=0.2)
        assert _blobs(s3) == blobs  # identical files: nothing uploaded again
        rollback(warehouse, registry, actor="test", reason="test")
        wait_until(lambda: versions() == ["v1", "v1"], timeout=10, interval=0.2)

        # A blob altered in the store after upload: the replicas refuse it and keep serving.
        store.publish_version(get(warehouse, other).artifact_dir)
        client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
        card = json.loads(client.get_object(Bucket=BUCKET, Key=f"tutorloop/versions/{other}.json")
                          ["Body"].read())  # fmt: skip
        blob = f"tutorloop/blobs/sha256/{card['files']['model_int8.onnx']}"
        client.put_object(Bucket=BUCKET, Key=blob, Body=b"not the model")
        promote(warehouse, registry, other, actor="test", reason="tampered", force=True)
        pointer = store.read_pointer("champion.json")
        assert pointer is not None and pointer["version"] == other
        time.sleep(2)  # ten polls
        assert versions() == ["v1", "v1"]
        assert not any((r.data_dir / "artifacts" / "cache" / other).exists() for r in replicas)
    refusals = [r for r in caplog.records if r.getMessage().startswith(f"refusing model {other}")]
    assert len(refusals) == 2 and "does not match its checksum" in refusals[0].getMessage()
