"""Benchmark: one retrain on the same rows down each training path, with the CPU named.

Variants, each in its own process (so peak RSS is its own): QLoRA (nf4) and LoRA on the fp32
base (none), with batches grouped by length (the default) or in random order (``+random``),
each on this CPU as it is and again as an AVX2-only CPU (``@avx2``:
``infra.machine.AVX2_ONLY`` lowers torch's, bitsandbytes' and oneDNN's kernels to AVX2; nf4
then dequantizes before every matmul and multiplies in bf16 without oneDNN). Each imports the
examples as gold, builds the dataset, trains, calibrates and registers — the `trainer bootstrap`
path — then scores the registered model on a held-out slice of the test file. Prints wall
time, peak RSS and accuracy per variant (mean and range over ``--seeds``, the trainer's seed),
ratios against LoRA fp32 on the same capability in the same run (and of random against
grouped batches), and which path ``trainer.quantization = "auto"`` picks on each.

    .venv/bin/python bench/retrain.py [--examples 1000] [--epochs 2] [--eval 1000] [--seeds 0]
        [--variants nf4,none,nf4@avx2,none@avx2] [--json-out bench/out/retrain.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tutorloop.infra.machine import AVX2_ONLY
from tutorloop.infra.warehouse_backends import open_warehouse

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "banking77"


def _child(variant: str, seed: int, args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    import numpy as np

    from tutorloop.evaluation.metrics import quality
    from tutorloop.infra.machine import describe_machine, training_path
    from tutorloop.infra.settings import load_settings
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.loop.cycle import bootstrap, sample_per_label
    from tutorloop.registry.store import get
    from tutorloop.registry.torch_model import load_torch_student

    train = read_labeled_csv(args.train)
    per_label = -(-args.examples // len(train.label_set))
    rows = sample_per_label(train, per_label, seed=0)
    keep = sorted(random.Random(1).sample(range(len(rows)), min(args.examples, len(rows))))
    rows = type(rows)([rows.texts[i] for i in keep], [rows.labels[i] for i in keep])
    quantization, _, batches = variant.partition("+")
    settings = load_settings(
        data_dir=data_dir,
        privacy={"scrubber": "regex"},
        trainer={
            "quantization": quantization,
            "bootstrap_epochs": args.epochs,
            "group_by_length": batches != "random",
            "seed": seed,
        },
    )
    started = time.perf_counter()
    report = bootstrap(settings, open_warehouse(settings), rows, source="bench", actor="bench")
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert report.version is not None
    student = load_torch_student(get(open_warehouse(settings), report.version).artifact_dir)
    test = read_labeled_csv(args.test)
    order = random.Random(2).sample(range(len(test)), min(args.eval, len(test)))
    index = {label: i for i, label in enumerate(student.labels)}
    probs = student.predict_proba([test.texts[i] for i in order])
    q = quality(probs, np.array([index[test.labels[i]] for i in order]))
    machine = describe_machine()
    return {
        "variant": variant,
        "seed": seed,
        "cpu": machine.cpu,
        "cpu_capability": machine.cpu_capability,
        "auto_picks": training_path("auto").quantization,
        "examples": len(rows),
        "epochs": args.epochs,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb),
        "quantization_used": report.quantization,
        "steps": report.metrics.get("steps"),
        "test_accuracy": round(q.accuracy, 4),
        "test_macro_f1": round(q.macro_f1, 4),
        "test_ece": round(q.ece, 4),
        "n_test": q.n,
    }


def _run_once(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    trained, _, capability = variant.partition("@")
    env = dict(os.environ)
    if capability == "avx2":
        env.update(AVX2_ONLY)
    elif capability:
        sys.exit(f"unknown capability {capability!r} in {variant!r}: only avx2 is emulated")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--variant", trained, "--data-dir", tmp]
        cmd += ["--examples", str(args.examples), "--epochs", str(args.epochs)]
        cmd += ["--eval", str(args.eval), "--train", str(args.train), "--test", str(args.test)]
        cmd += ["--seeds", str(seed)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO, env=env)
    if out.returncode != 0:
        sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["variant"] = variant
    print(
        f"{variant} seed {seed}: {result['wall_s']} s, accuracy {result['test_accuracy']}",
        flush=True,
    )
    return result


def _run(variant: str, seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """One variant over every seed: the numbers' mean, with each seed's run kept."""
    runs = [_run_once(variant, seed, args) for seed in seeds]
    result = dict(runs[0])
    for key in ("wall_s", "peak_rss_mb", "test_accuracy", "test_macro_f1", "test_ece"):
        values = [float(r[key]) for r in runs]
        result[key] = round(sum(values) / len(values), 4)
        result[f"{key}_range"] = [min(values), max(values)]
    result["runs"] = runs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval", type=int, default=1000, help="held-out test rows scored")
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DATA / "test.csv")
    parser.add_argument(
        "--variants",
        default="nf4,none,nf4@avx2,none@avx2",
        help="comma-separated QUANTIZATION[+random][@avx2]; +random: batches in random order "
        "instead of grouped by length; @avx2: as on an AVX2-only CPU",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated trainer seeds")
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.variant:
        print(json.dumps(_child(args.variant, int(args.seeds), args, args.data_dir)))
        return
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results = {variant: _run(variant, seeds, args) for variant in args.variants.split(",")}
    first = next(iter(results.values()))
    print(f"CPU: {first['cpu']}")
    keys = (
        "cpu_capability",
        "auto_picks",
        "examples",
        "epochs",
        "steps",
        "wall_s",
        "peak_rss_mb",
        "test_accuracy",
        "test_macro_f1",
        "test_ece",
    )
    print(f"{'':16}" + "".join(f"{v:>14}" for v in results))
    for key in keys:
        print(f"{key:16}" + "".join(f"{r[key]!s:>14}" for r in results.values()))
    for variant, r in results.items():
        trained, _, capability = variant.partition("@")
        at = f"@{capability}" if capability else ""
        quantization, _, order = trained.partition("+")
        grouped = results.get(quantization + at)
        if order == "random" and grouped is not None:
            wall = float(r["wall_s"]) / float(grouped["wall_s"])
            gap = float(r["test_accuracy"]) - float(grouped["test_accuracy"])
            print(
                f"{variant} / {quantization + at} (grouped by length): wall {wall:.2f}x, "
                f"accuracy {gap:+.4f}"
            )
        baseline = results.get("none" + at)
        if quantization == "nf4" and not order and baseline is not None:
            wall = float(r["wall_s"]) / float(baseline["wall_s"])
            gap = float(r["test_accuracy"]) - float(baseline["test_accuracy"])
            print(
                f"{variant} / LoRA fp32 on {r['cpu_capability']}: wall {wall:.2f}x, "
                f"accuracy {gap:+.4f}"
            )
    for variant, r in results.items():
        print(f"auto on {r['cpu_capability']} ({variant}) picks {r['auto_picks']}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
