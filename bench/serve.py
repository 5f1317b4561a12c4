"""Benchmark: serving the int8 ONNX student against torch fp32, in the same run.

Trains a student first (`trainer bootstrap`, N examples per label from Banking77) unless
``--data-dir`` points at a tutorloop data directory that has a champion. Then, on held-out
test queries:

- single-query latency p50 / p95 (one thread each: a serving request uses one core),
- batch throughput (batch 32, all cores),
- accuracy of each on the same rows,
- rollback: time of one `registry rollback` (API call) while another process writes to the
  warehouse, and of the whole CLI command;
- the int8 model with its open-set scorer (``serving.open_set``) against without, single query.

Targets (issue #7): p95 <= 5 ms, >= 3x faster than torch fp32, accuracy within 0.5 point,
rollback < 2 s.

    .venv/bin/python bench/serve.py [--per-label 20] [--queries 500] [--eval 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.infra.warehouse_backends import open_warehouse

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "banking77"


def _latency_ms(predict: Any, texts: list[str]) -> tuple[float, float]:
    from tutorloop.evaluation.metrics import single_query_latencies_ms

    timings = single_query_latencies_ms(predict, texts)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 95))


def _throughput(predict: Any, texts: list[str], batch: int = 32) -> float:
    predict(texts[:batch])
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        predict(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def _prepare(args: argparse.Namespace, data_dir: Path) -> Any:
    from tutorloop.infra.settings import load_settings
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.loop.cycle import bootstrap, sample_per_label
    from tutorloop.registry.lifecycle import evaluate_candidate, promote
    from tutorloop.registry.store import champion

    settings = load_settings(
        data_dir=data_dir,
        privacy={"scrubber": "regex"},
        trainer={"quantization": "none", "bootstrap_epochs": args.epochs},
        registry={"auto_promote": False},
    )
    warehouse = open_warehouse(settings)
    if champion(warehouse) is None:
        rows = sample_per_label(read_labeled_csv(args.train), args.per_label, 0)
        report = bootstrap(settings, warehouse, rows, source="bench", actor="bench")
        assert report.version
        evaluate_candidate(warehouse, settings, report.version)
        promote(warehouse, settings, report.version, actor="bench", reason="bench", force=True)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="use this data dir's champion")
    parser.add_argument("--per-label", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--queries", type=int, default=500, help="single-query timings")
    parser.add_argument("--eval", type=int, default=1000, help="rows for accuracy/throughput")
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DATA / "test.csv")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from tutorloop.evaluation.classifier import Classifier, label_targets
    from tutorloop.evaluation.metrics import accuracy
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.registry.onnx_model import load_onnx_student
    from tutorloop.registry.store import champion
    from tutorloop.registry.torch_model import load_torch_student

    tmp = tempfile.TemporaryDirectory()
    settings = _prepare(args, args.data_dir or Path(tmp.name))
    warehouse = open_warehouse(settings)
    current = champion(warehouse)
    assert current is not None
    test = read_labeled_csv(args.test)
    order = random.Random(3).sample(range(len(test)), min(args.eval, len(test)))
    texts = [test.texts[i] for i in order]
    truth = [test.labels[i] for i in order]

    results: dict[str, dict[str, float]] = {}
    for name in ("int8", "fp32"):
        torch.set_num_threads(1)
        if name == "int8":
            model: Classifier = load_onnx_student(current.artifact_dir, threads=1)
        else:
            model = load_torch_student(current.artifact_dir)
        p50, p95 = _latency_ms(model.predict_proba, texts[: args.queries])
        if name == "int8":
            model = load_onnx_student(current.artifact_dir, threads=os.cpu_count() or 1)
        torch.set_num_threads(os.cpu_count() or 1)
        rate = _throughput(model.predict_proba, texts)
        acc = accuracy(model.predict_proba(texts), label_targets(model.labels, truth))
        results[name] = {"p50_ms": p50, "p95_ms": p95, "batch_per_s": rate, "accuracy": acc}

    open_set = _open_set_latency(current.artifact_dir, texts[: args.queries])
    rollback_ms, cli_s = _rollback_timings(warehouse, settings, current.version)
    _print(results, current.version, len(texts), args.queries, rollback_ms, cli_s)
    if open_set is not None:
        (p50, p95), (p50_scope, p95_scope) = open_set
        print(f"open-set scoring (serving.open_set): single-query p50/p95 {p50_scope:.2f} / "
              f"{p95_scope:.2f} ms against {p50:.2f} / {p95:.2f} ms without it in the same run "
              f"(p95 ratio {p95_scope / p95:.2f}x)")  # fmt: skip
    tmp.cleanup()


def _open_set_latency(
    folder: Path, texts: list[str]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Single-query latency of the int8 model as served without and with its open-set scorer
    (one thread, one after the other on the same queries); None without a scorer."""
    from dataclasses import replace

    from tutorloop.registry.onnx_model import load_onnx_student

    model = load_onnx_student(folder, threads=1)
    if model.open_set is None:
        return None
    if model.open_set.threshold is None:  # none placed: score anyway, to time the scoring
        model = replace(model, open_set=replace(model.open_set, threshold=0.0))
    plain = _latency_ms(lambda t: model.predict_with_scope(t, batch=1, scope=False), texts)
    scoped = _latency_ms(lambda t: model.predict_with_scope(t, batch=1, scope=True), texts)
    return plain, scoped


def _rollback_timings(warehouse: Any, settings: Any, current: str) -> tuple[float, float]:
    """Rollback under a concurrent writer (API ms, CLI s): needs a champion to return to."""
    from tutorloop.registry.lifecycle import promote, rollback
    from tutorloop.registry.store import list_versions

    versions = [v.version for v in list_versions(warehouse)]
    rollback_ms = cli_s = float("nan")
    if versions:
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.warehouse_writer", str(settings.warehouse_path),
             "loop", "6"],
            cwd=REPO,
        )  # fmt: skip
        time.sleep(0.5)
        other = _second_champion(warehouse, settings, current)
        if other is not None:
            started = time.perf_counter()
            rollback(warehouse, settings, actor="bench", reason="bench")
            rollback_ms = (time.perf_counter() - started) * 1000
            promote(warehouse, settings, other, actor="bench", reason="bench", force=True)
            env = {**os.environ, "TUTORLOOP_DATA_DIR": str(settings.data_dir)}
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tutorloop", "registry", "rollback", "--reason", "bench"],
                env=env, check=True, capture_output=True, cwd=REPO,
            )  # fmt: skip
            cli_s = time.perf_counter() - started
        writer.wait()
    return rollback_ms, cli_s


def _print(
    results: dict[str, dict[str, float]], version: str, n_rows: int, queries: int,
    rollback_ms: float, cli_s: float,
) -> None:  # fmt: skip
    i8, f32 = results["int8"], results["fp32"]
    print(f"model {version}, {n_rows} test rows, {queries} single queries")
    print(f"{'':20} {'int8 ORT':>10} {'torch fp32':>11}")
    for key in ("p50_ms", "p95_ms", "batch_per_s", "accuracy"):
        print(f"{key:20} {i8[key]:>10.4g} {f32[key]:>11.4g}")
    print(f"p95 speed-up (fp32 / int8): {f32['p95_ms'] / i8['p95_ms']:.2f}x")
    print(f"batch throughput ratio (int8 / fp32): {i8['batch_per_s'] / f32['batch_per_s']:.2f}x")
    print(f"accuracy, int8 - fp32: {100 * (i8['accuracy'] - f32['accuracy']):+.2f} points")
    print(f"rollback under a concurrent writer: API {rollback_ms:.0f} ms, CLI {cli_s:.2f} s")
    print(json.dumps({"results": results, "rollback_api_ms": rollback_ms, "rollback_cli_s": cli_s}))


def _second_champion(warehouse: Any, settings: Any, current: str) -> str | None:
    """Make a second version champion (a copy of the current one is enough to time a
    rollback), so that there is something to roll back from."""
    import shutil

    from tutorloop.registry.lifecycle import promote
    from tutorloop.registry.store import get, register_candidate

    source = get(warehouse, current)
    staged = settings.models_artifacts_dir / ".staging" / "bench-copy"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(source.artifact_dir, staged)
    (staged / "card.json").unlink()
    card = {k: v for k, v in source.card.items() if k not in ("files", "version", "run_id")}
    copy = register_candidate(
        warehouse, settings, staged, run_id=source.run_id or "bench", label_set=source.label_set,
        card=card,
    )  # fmt: skip
    promote(warehouse, settings, copy.version, actor="bench", reason="bench", force=True)
    return copy.version


if __name__ == "__main__":
    main()
