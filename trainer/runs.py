"""``training_runs`` rows: what a run was given and where it ran, written before it trains.

A run row is inserted as ``running`` before any training, and finished as ``succeeded`` or
``failed`` (with the error), so a crashed run is visible rather than missing.
"""

from __future__ import annotations

import json
import platform
import subprocess
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tutorloop.infra.machine import describe_machine
from tutorloop.infra.warehouse import Warehouse

_PACKAGES = (
    "tutorloop", "torch", "transformers", "peft", "bitsandbytes", "opacus", "datasets",
    "numpy", "scikit-learn", "onnxruntime", "duckdb",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the tutorloop checkout, when it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here, capture_output=True, text=True, timeout=5,
    ).stdout.strip()  # fmt: skip
    return f"{commit}-dirty" if dirty else commit


def hardware() -> dict[str, Any]:
    """Where a run trained: the CPU by name and torch's capability, since speed (and the
    training path ``auto`` picks) depends on both."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    info.update(describe_machine().to_dict())
    return info


def start_run(
    warehouse: Warehouse,
    *,
    dataset_hash: str,
    base_model: str,
    quantization: str,
    config: dict[str, Any],
    seed: int,
) -> str:
    run_id = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO training_runs (run_id, started_at, status, dataset_hash, base_model,"
            " quantization, config, seed, package_versions, git_commit, hardware)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id, datetime.now(UTC), dataset_hash, base_model, quantization,
                json.dumps(config, sort_keys=True, default=str), seed,
                json.dumps(package_versions(), sort_keys=True), git_commit(),
                json.dumps(hardware(), sort_keys=True),
            ],
        )  # fmt: skip
    return run_id


def finish_run(
    warehouse: Warehouse,
    run_id: str,
    *,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    quantization: str | None = None,
    fallback_reason: str | None = None,
) -> None:
    with warehouse.transaction() as con:
        con.execute(
            "UPDATE training_runs SET finished_at = ?, status = ?, metrics = ?, error = ?,"
            " quantization = coalesce(?, quantization), fallback_reason = ? WHERE run_id = ?",
            [
                datetime.now(UTC), "failed" if error else "succeeded",
                json.dumps(metrics, sort_keys=True) if metrics is not None else None,
                error, quantization, fallback_reason, run_id,
            ],
        )  # fmt: skip
