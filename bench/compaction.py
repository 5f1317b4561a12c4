"""Benchmark: an emergency rollback while an erasure compacts a large warehouse (issue #13).

Builds a warehouse of at least ``--mb`` MB (captured cases with text, audit rows), two model
versions that both served, then, twice:

1. ``tutorloop privacy forget`` (a separate process) erases a user, which ends by compacting
   the file; as soon as the compaction's copy has started, this process rolls the champion
   back and times it. The rollback is urgent work: the compaction yields to it.
2. The same with a rollback that does not announce itself as urgent (the behaviour before
   pre-emption): it waits for the compaction's exclusive gate, up to its lock timeout.

The figure is the second latency over the first, same run. Target: the rollback under 2 s.

    .venv/bin/python bench/compaction.py [--mb 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.warehouse import Warehouse, WarehouseBusyError
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry import lifecycle
from tutorloop.registry.store import register_candidate

_FILL = """
INSERT INTO cases (case_id, request_id, ts, tenant_id, user_id, text, text_hash,
                   capture_reason, consent_training, scrub_findings, scrub_policy_version)
SELECT 'c-' || $start + i, 'r-' || $start + i, now(), 't',
       CASE WHEN i % 1000 = 0 THEN 'user-' || (i // 1000) % 7 ELSE 'u-' || i % 5000 END,
       repeat(md5(($start + i)::VARCHAR), 8), md5(i::VARCHAR), 'low_confidence', true,
       '{}', 'p1'
FROM range($n) t(i);
---
INSERT INTO predictions_audit (event_id, ts, tenant_id, user_id, request_id, model_version,
                               label, confidence, consent_training, captured, policy_version)
SELECT 'e-' || $start + i, now(), 't', 'u-' || i % 5000, 'r-' || $start + i, 'v1',
       'label-' || i % 77, random(), true, true, 'p1'
FROM range($n) t(i);
"""


def _fill(warehouse: Warehouse, mb: int) -> int:
    start, step = 0, 200_000
    warehouse.query("SELECT 1")  # creates and migrates the file
    while warehouse.path.stat().st_size < mb * 1024 * 1024:
        with warehouse.transaction() as con:
            for statement in _FILL.split("---"):
                con.execute(statement, {"start": start, "n": step})
        start += step
        print(f"  {start:,} cases, {warehouse.path.stat().st_size / 2**20:,.0f} MB", flush=True)
    return start


def _versions(warehouse: Warehouse, settings: Settings) -> None:
    for name in ("v-a", "v-b"):
        staged = settings.models_artifacts_dir / ".staging" / name
        staged.mkdir(parents=True)
        (staged / "model.int8.onnx").write_bytes(b"placeholder: the rollback never loads it")
        version = register_candidate(
            warehouse, settings, staged, run_id=name, label_set=["a", "b"],
            card={"kind": "student", "dataset_hash": name},
        ).version  # fmt: skip
        lifecycle.promote(warehouse, settings, version, actor="bench", reason="setup", force=True)


def _rollback_during_forget(
    settings: Settings, warehouse: Warehouse, user: str, *, urgent: bool
) -> tuple[float, float]:
    """Seconds the rollback took, and the forget's total seconds."""
    env = {**os.environ, "TUTORLOOP_DATA_DIR": str(settings.data_dir)}
    copying = f"{warehouse.path.name}.compacting*"
    started = time.monotonic()
    command = ["privacy", "forget", "--user", user, "--tenant", "t", "--actor", "bench"]
    forget = subprocess.Popen(
        [sys.executable, "-m", "tutorloop", *command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while not any(warehouse.path.parent.glob(copying)):
        if forget.poll() is not None:
            raise SystemExit(f"forget ended before compacting: {forget.communicate()[1]}")
        time.sleep(0.01)
    time.sleep(0.5)  # well into the copy
    t0 = time.monotonic()
    try:
        if urgent:
            lifecycle.rollback(warehouse, settings, actor="on-call")
        else:  # the same work, not announced as urgent
            lifecycle._rollback(warehouse, settings, actor="on-call", to=None, reason=None,
                                force=False)  # fmt: skip
    except WarehouseBusyError as exc:
        print(f"  the rollback failed: {exc}")
    took = time.monotonic() - t0
    _, err = forget.communicate()
    if forget.returncode != 0:
        raise SystemExit(f"forget failed: {err.strip()}")
    return took, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="warehouse size to build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        warehouse = open_warehouse(settings)
        print(f"building a warehouse of >= {args.mb} MB")
        cases = _fill(warehouse, args.mb)
        _versions(warehouse, settings)
        size = warehouse.path.stat().st_size / 2**20
        t0 = time.monotonic()
        warehouse.compact()
        alone = time.monotonic() - t0
        print(f"{cases:,} cases, {size:,.0f} MB; compaction alone: {alone:.1f} s")
        urgent, forget_urgent = _rollback_during_forget(settings, warehouse, "user-1", urgent=True)
        plain, forget_plain = _rollback_during_forget(settings, warehouse, "user-2", urgent=False)
        print(f"rollback during compaction, pre-empting: {urgent:.2f} s "
              f"(forget took {forget_urgent:.1f} s)")  # fmt: skip
        print(f"rollback during compaction, waiting:     {plain:.2f} s "
              f"(forget took {forget_plain:.1f} s)")  # fmt: skip
        print(f"ratio waiting / pre-empting: {plain / urgent:.1f}x; target < 2 s: "
              f"{'met' if urgent < 2 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
