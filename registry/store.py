"""Model versions: artifacts on disk, rows in ``model_versions``, checksums in the model card.

A version is ``v<N>``, numbered in registration order. Its folder
``<data_dir>/artifacts/models/<version>/`` holds whatever the producer staged (the trainer's
adapter, calibration and tokenizer; the exporter adds ONNX files) and ``card.json``, which
records the sha256 of every other file. Loading verifies them: a tampered or missing file is
refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import file_sha256
from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import ModelStatus
from tutorloop.infra.warehouse import Warehouse

CARD = "card.json"


class UnknownVersionError(TutorloopError):
    """No model version with that name."""


class ArtifactIntegrityError(TutorloopError):
    """A model's files do not match the checksums in its card."""


@dataclass(frozen=True)
class ModelVersion:
    version: str
    status: str
    run_id: str | None
    artifact_dir: Path
    label_set: list[str]
    card: dict[str, Any]

    @property
    def dataset_hash(self) -> str | None:
        value = self.card.get("dataset_hash")
        return str(value) if value else None


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the card, by relative path."""
    return {
        str(path.relative_to(folder)): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CARD
    }


def write_card(folder: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``card.json`` with fresh checksums of the folder's files; return the card."""
    full = {**card, "files": checksums(folder)}
    # Write, flush to disk, then rename: a crash leaves the old card or the new one, never half.
    tmp = folder / f".{CARD}.{os.getpid()}.tmp"
    with tmp.open("w") as fh:
        fh.write(json.dumps(full, indent=2, sort_keys=True, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / CARD)
    return full


def verify(folder: Path) -> dict[str, Any]:
    """The card, once every file it lists exists with its recorded sha256."""
    card_path = folder / CARD
    if not card_path.is_file():
        raise ArtifactIntegrityError(f"{folder}: no {CARD}")
    card: dict[str, Any] = json.loads(card_path.read_text())
    for name, expected in card.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ArtifactIntegrityError(f"{folder}: {name} is missing")
        if file_sha256(path) != expected:
            raise ArtifactIntegrityError(f"{folder}: {name} does not match its checksum")
    return card


def _row(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        status=row["status"],
        run_id=row["run_id"],
        artifact_dir=Path(row["artifact_dir"]),
        label_set=json.loads(row["label_set"]),
        card=json.loads(row["card"]),
    )


_COLUMNS = "version, status, run_id, artifact_dir, label_set, card"


def get(warehouse: Warehouse, version: str) -> ModelVersion:
    rows = warehouse.query_dicts(
        f"SELECT {_COLUMNS} FROM model_versions WHERE version = ?", [version]
    )
    if not rows:
        raise UnknownVersionError(f"unknown model version {version!r}")
    return _row(rows[0])


def warm_start_chain(warehouse: Warehouse, version: ModelVersion) -> list[ModelVersion]:
    """``version`` and the versions it was warm-started from, newest first (the chain ends at a
    cold start, at a version no longer registered, or where it would loop)."""
    chain = [version]
    while isinstance(parent := chain[-1].card.get("warm_start_from"), str):
        if parent in {v.version for v in chain}:
            break
        try:
            chain.append(get(warehouse, parent))
        except UnknownVersionError:
            break
    return chain


def champion(warehouse: Warehouse) -> ModelVersion | None:
    rows = warehouse.query_dicts(
        f"SELECT {_COLUMNS} FROM model_versions WHERE status = ? ORDER BY created_at DESC LIMIT 1",
        [ModelStatus.CHAMPION],
    )
    return _row(rows[0]) if rows else None


def list_versions(warehouse: Warehouse) -> list[ModelVersion]:
    rows = warehouse.query_dicts(
        f"SELECT {_COLUMNS} FROM model_versions ORDER BY created_at, version"
    )
    return [_row(row) for row in rows]


def register_candidate(
    warehouse: Warehouse,
    settings: Settings,
    staged: Path,
    *,
    run_id: str,
    label_set: list[str],
    card: dict[str, Any],
) -> ModelVersion:
    """Move ``staged`` into the registry as the next version, status ``candidate``.

    The version number is taken and the folder moved inside one warehouse transaction: a
    failure leaves no row, and no row points at a missing folder.
    """
    root = settings.models_artifacts_dir
    root.mkdir(parents=True, exist_ok=True)
    with warehouse.transaction() as con:
        count = con.execute("SELECT count(*) FROM model_versions").fetchone()
        version = f"v{int(count[0] if count else 0) + 1}"
        target = root / version
        if target.exists():  # left by a crash between rename and commit: never reuse it
            target.rename(root / f".orphan-{version}-{run_id}")
        full = write_card(staged, {**card, "version": version, "run_id": run_id})
        staged.rename(target)
        try:
            con.execute(
                "INSERT INTO model_versions (version, run_id, status, artifact_dir, label_set,"
                " card) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    version,
                    run_id,
                    ModelStatus.CANDIDATE,
                    str(target),
                    json.dumps(label_set),
                    json.dumps(full),
                ],
            )
        except BaseException:
            target.rename(staged)
            raise
    return ModelVersion(version, ModelStatus.CANDIDATE, run_id, target, label_set, full)
