"""Benchmark: one retrain of 5,000 examples x 2 epochs, QLoRA (nf4) next to LoRA in fp32.

Each variant runs in its own process (so peak RSS is its own): import the examples as gold,
build the dataset, train, calibrate and register — the `trainer bootstrap` path — then score
the registered model on a held-out slice of the test file. Prints wall time, peak RSS and
accuracy per variant, and QLoRA's figures as ratios against LoRA measured in the same run.
Targets (issue #6): <= 10 minutes and <= 3 GB peak RSS on this machine.

    .venv/bin/python bench/retrain.py [--examples 5000] [--epochs 2] [--eval 1000]
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

from tutorloop.infra.warehouse_backends import open_warehouse

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "banking77"


def _child(variant: str, args: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    import numpy as np

    from tutorloop.evaluation.metrics import quality
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
    settings = load_settings(
        data_dir=data_dir,
        privacy={"scrubber": "regex"},
        trainer={"quantization": variant, "bootstrap_epochs": args.epochs},
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
    return {
        "variant": variant,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval", type=int, default=1000, help="held-out test rows scored")
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DATA / "test.csv")
    parser.add_argument("--variant", choices=["nf4", "none"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.variant:
        print(json.dumps(_child(args.variant, args, args.data_dir)))
        return
    results = {}
    for variant in ("nf4", "none"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--variant", variant, "--data-dir", tmp]
            cmd += ["--examples", str(args.examples), "--epochs", str(args.epochs)]
            cmd += ["--eval", str(args.eval), "--train", str(args.train), "--test", str(args.test)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
            if out.returncode != 0:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    q, lora = results["nf4"], results["none"]
    print(f"{'':22} {'QLoRA (nf4)':>12} {'LoRA fp32':>12}")
    for key in ("examples", "epochs", "steps", "wall_s", "peak_rss_mb", "test_accuracy",
                "test_macro_f1", "test_ece"):  # fmt: skip
        print(f"{key:22} {q[key]!s:>12} {lora[key]!s:>12}")
    print(f"QLoRA / LoRA wall time: {q['wall_s'] / lora['wall_s']:.2f}x")
    print(f"QLoRA / LoRA peak RSS:  {q['peak_rss_mb'] / lora['peak_rss_mb']:.2f}x")
    print(f"accuracy, QLoRA - LoRA: {q['test_accuracy'] - lora['test_accuracy']:+.4f}")
    for name, r in results.items():
        ok = r["wall_s"] <= 600 and r["peak_rss_mb"] <= 3072
        print(f"target (<= 600 s, <= 3072 MB) {name}: {'met' if ok else 'MISSED'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
