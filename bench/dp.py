"""Benchmark: the utility-privacy curve of a demo-sized DP retrain on Banking77.

Usage:
    python bench/dp.py [--private 1500] [--epsilons 8,4,2,1] [--test-every 2] [--out DIR]
    python bench/dp.py --trainer-seeds 0,1,2   # each point once per seed, with the spread
    python bench/dp.py --sweep            # the settings sweep at one epsilon (--sweep-epsilon)

One run, same data and same seed split for every variant:
1. public rows: 10 labeled examples per intent from the train file (the demo's seed set), a
   tenth of them held for validation; the seed student trains on them without DP, once;
2. private rows: ``--private`` other train rows with their labels (what a week of captured
   production cases gives the demo);
3. each variant warm-starts from the seed student and retrains on public + private rows the
   way the cycle does: without DP (the baseline, trainer defaults), then with DP-SGD at each
   example-level epsilon (public rows without noise, private rows under DP, the
   ``[privacy]`` DP defaults unless the sweep overrides them: head-only DP; ``--set
   dp_adapters=true`` for DP-SGD over the adapters);
4. each is scored on the test file (every ``--test-every``-th row): accuracy, macro-F1, ECE
   (after its calibration), with wall time, the noise multiplier and the epsilon spent.

Prints a table (the no-DP row is the baseline; the gap column is DP minus no-DP, in points),
writes ``dp_curve.png`` and ``dp_curve.json`` to ``--out``.
Targets (issue #19): within 5 points of no-DP at epsilon 8, within 10 at epsilon 4.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tutorloop.evaluation.metrics import quality
from tutorloop.infra.settings import load_settings
from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.models import resolve_model
from tutorloop.trainer.dataset_store import dataset_features
from tutorloop.trainer.inference import predict_logits
from tutorloop.trainer.student import load_student, save_student
from tutorloop.trainer.train import DPRequest, train_student

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "banking77"
console = Console()


def _rows(args: argparse.Namespace) -> tuple[list[str], list[dict[str, Any]], list[Any]]:
    train = read_labeled_csv(args.train)
    labels = sorted(set(train.labels))
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(train.labels):
        by_label[label].append(i)
    rng = random.Random(0)
    public: list[int] = []
    for label in labels:
        public += rng.sample(by_label[label], 10)
    rest = sorted(set(range(len(train.labels))) - set(public))
    private = rng.sample(rest, args.private)
    rows = []
    for n, i in enumerate(public):
        split = "validation" if n % 10 == 0 else "train"
        rows.append(_row(train.texts[i], train.labels[i], labels, split, private=False))
    for i in private:
        rows.append(_row(train.texts[i], train.labels[i], labels, "train", private=True))
    test = read_labeled_csv(args.test)
    keep = range(0, len(test.texts), args.test_every)
    return labels, rows, [[test.texts[i] for i in keep], [test.labels[i] for i in keep]]


def _row(text: str, label: str, labels: list[str], split: str, *, private: bool) -> dict[str, Any]:
    one_hot = [1.0 if x == label else 0.0 for x in labels]
    return {"case_id": f"{split}:{text}", "text": text, "label": labels.index(label),
            "soft_targets": one_hot, "source": "human", "split": split, "replay": False,
            "private": private}  # fmt: skip


def _dataset(rows: list[dict[str, Any]], labels: list[str]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows, features=dataset_features(labels))


def _score(student: Any, temperature: float, test: list[Any], labels: list[str]) -> dict[str, Any]:
    import torch

    ids = student.tokenizer(test[0], truncation=True, max_length=64)["input_ids"]
    logits = predict_logits(student.model, student.tokenizer, ids)
    probs = torch.softmax(logits / temperature, dim=1).numpy()
    targets = np.array([labels.index(label) for label in test[1]])
    q = quality(probs, targets).to_dict()
    return {"accuracy": q["accuracy"], "macro_f1": q["macro_f1"], "ece": q["ece"]}


def _variant(
    name: str, epsilon: float | None, privacy: dict[str, Any], ctx: dict[str, Any]
) -> dict[str, Any]:
    cfg: TrainerSettings = ctx["cfg"]
    student = load_student(ctx["base"], ctx["labels"], cfg, init_adapter=ctx["seed"] / "adapter")
    settings = PrivacySettings(**{**privacy, "dp_epsilon": epsilon})
    dp = DPRequest(settings, f"bench-{name}") if epsilon is not None else None
    started = time.perf_counter()
    outcome = train_student(student, ctx["data"], cfg, dp=dp)
    wall = time.perf_counter() - started
    spend = outcome.privacy
    result = {
        "variant": name, "epsilon_target": epsilon, "wall_s": round(wall, 1),
        "steps": outcome.steps,
        "epsilon_spent": round(spend.epsilon, 3) if spend else None,
        "noise_multiplier": round(spend.noise_multiplier, 3) if spend else None,
        "sample_rate": round(spend.sample_rate, 4) if spend else None,
        **_score(student, outcome.temperature, ctx["test"], ctx["labels"]),
        "dp_settings": {k: v for k, v in privacy.items() if k.startswith("dp_") and dp},
        # Public-validation loss at each check, both phases: did DP move it, and which way?
        "val_losses": [round(h["val_loss"], 3) for h in outcome.history],
        "dp_head": outcome.metrics.get("dp_head"),  # head-only DP: its steps and scale
    }  # fmt: skip
    console.print(result)
    return result


def _plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def by_epsilon(eps: float | None) -> list[float]:
        return [r["accuracy"] for r in results if r["epsilon_target"] == eps]

    base = float(np.median(by_epsilon(None)))
    eps = sorted({r["epsilon_target"] for r in results if r["epsilon_target"]})
    points = [by_epsilon(e) for e in eps]
    middle = [float(np.median(p)) for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        eps, middle, fmt="o-", capsize=3,
        label=f"DP (private rows), median of {len(points[0])}, bars min-max",
        yerr=[[m - min(p) for m, p in zip(middle, points, strict=True)],
              [max(p) - m for m, p in zip(middle, points, strict=True)]],
    )  # fmt: skip
    ax.axhline(base, color="gray", ls="--", label="no DP, same rows")
    ax.axhline(base - 0.05, color="green", ls=":", label="target at eps 8 (-5 pts)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("example-level epsilon")
    ax.set_ylabel("test accuracy")
    ax.set_title("Banking77 demo-sized retrain: utility vs privacy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "dp_curve.png", dpi=120)


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The options of every bench on this split: data files, test subsample, seed cache, output."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DATA / "test.csv")
    parser.add_argument("--test-every", type=int, default=2)
    parser.add_argument(
        "--seed-cache", type=Path, default=None,
        help="keep the seed student here and reuse it on the next run (same data split)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    return parser


def bench_setup(args: argparse.Namespace) -> tuple[Any, ...]:
    """The split (labels, rows, test), the settings, the trainer config (LoRA in fp32, as
    every bench here trains) and the student's base model folder."""
    args.out.mkdir(parents=True, exist_ok=True)
    labels, rows, test = _rows(args)
    settings = load_settings()
    cfg = settings.trainer.model_copy(update={"quantization": "none"})
    return labels, rows, test, settings, cfg, resolve_model(cfg.base_model, settings.models_dir)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--private", type=int, default=1500)
    parser.add_argument("--epsilons", default="8,4,2,1")
    parser.add_argument("--sweep", action="store_true", help="the DP settings sweep instead")
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-DP variant")
    parser.add_argument("--sweep-epsilon", type=float, default=8.0)
    parser.add_argument(
        "--trainer-seeds", default="0",
        help="comma-separated trainer seeds: the curve once per seed, with the median and "
        "the spread per epsilon",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a [privacy] DP setting for every variant, e.g. --set dp_learning_rate=5e-4",
    )  # fmt: skip
    args = parser.parse_args()
    labels, rows, test, settings, cfg, base = bench_setup(args)
    tmp = Path(tempfile.mkdtemp(prefix="tutorloop-dp-"))
    try:
        seed_dir, seed_score = _seed(args, rows, labels, test, cfg, base, tmp)
        ctx = {"cfg": cfg, "base": base, "labels": labels, "seed": seed_dir,
               "data": _dataset(rows, labels), "test": test}  # fmt: skip
        privacy = settings.privacy.model_dump()
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in privacy:
                raise SystemExit(f"--set {key}: not a [privacy] setting")
            privacy[key] = _setting(value)
        if args.sweep:
            results = _sweep(args, privacy, ctx)
        else:
            results = _curve(args, privacy, ctx)
            if not args.no_baseline:
                _plot(results, args.out)
        _report(results, seed_score, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _curve(
    args: argparse.Namespace, privacy: dict[str, Any], ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    """The no-DP baseline and each epsilon, once per trainer seed (the public phase's
    shuffling and the DP noise draw); the seed student and the data split stay fixed."""
    results = []
    for seed in (int(s) for s in args.trainer_seeds.split(",")):
        run = {**ctx, "cfg": ctx["cfg"].model_copy(update={"seed": seed})}
        points = [] if args.no_baseline else [_variant("no-dp", None, privacy, run)]
        for eps in (float(e) for e in args.epsilons.split(",")):
            points.append(_variant(f"eps{eps:g}", eps, privacy, run))
        results += [{**point, "trainer_seed": seed} for point in points]
    return results


def _setting(value: str) -> bool | int | float | str:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _seed(
    args: argparse.Namespace, rows: list[dict[str, Any]], labels: list[str], test: list[Any],
    cfg: TrainerSettings, base: Path, tmp: Path,
) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """The seed student (public rows, no DP): trained now, or read from ``--seed-cache``."""
    folder = args.seed_cache or tmp / "seed"
    if (folder / "score.json").is_file():
        return folder, json.loads((folder / "score.json").read_text())
    seed = load_student(base, labels, cfg)
    started = time.perf_counter()
    public = _dataset([r for r in rows if not r["private"]], labels)
    outcome = train_student(seed, public, cfg, epochs=cfg.bootstrap_epochs)
    save_student(seed, folder, labels, outcome.temperature)
    score = _score(seed, outcome.temperature, test, labels)
    (folder / "score.json").write_text(json.dumps(score))
    console.print(f"seed (public rows only, {time.perf_counter() - started:.0f}s): {score}")
    return folder, score


def _sweep(
    args: argparse.Namespace, privacy: dict[str, Any], ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    if privacy["dp_adapters"]:  # DP-SGD over the adapters
        grid: list[dict[str, Any]] = [
            {"dp_learning_rate": lr, "dp_head_learning_rate": head, "dp_max_grad_norm": clip}
            for lr, head in ((5e-4, 5e-3), (2e-3, 2e-2))
            for clip in (0.1, 1.0)
        ] + [{"dp_batch_size": 64, "dp_epochs": 3}, {"dp_batch_size": 512, "dp_epochs": 20}]
    else:  # head-only DP: step size and clip norm around the defaults, steps from the plan
        grid = [
            {"dp_head_step_size": step, "dp_head_max_grad_norm": clip}
            for step in (0.5, 1.0, 2.0)
            for clip in (2.0, 5.0, 10.0)
        ]
    results = [] if args.no_baseline else [_variant("no-dp", None, privacy, ctx)]
    for point in grid:
        name = ",".join(f"{k.removeprefix('dp_')}={v:g}" for k, v in point.items())
        result = _variant(name, args.sweep_epsilon, {**privacy, **point}, ctx)
        results.append({**result, **point})
    return results


def _baseline(results: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The no-DP row of the same trainer seed as ``row``."""
    return next((r for r in results if r["epsilon_target"] is None
                 and r.get("trainer_seed") == row.get("trainer_seed")), None)  # fmt: skip


def _report(results: list[dict[str, Any]], seed: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table("variant", "seed", "epsilon", "accuracy", "vs no-DP (pts)", "macro-F1", "ECE",
                  "sigma", "steps", "wall s")  # fmt: skip
    for r in results:
        base = _baseline(results, r)
        gap = 100 * (r["accuracy"] - base["accuracy"]) if base else float("nan")
        table.add_row(
            r["variant"], str(r.get("trainer_seed", "-")),
            f"{r['epsilon_spent']:.2f}" if r["epsilon_spent"] else "-",
            f"{r['accuracy']:.3f}", f"{gap:+.1f}" if r is not base else "baseline",
            f"{r['macro_f1']:.3f}", f"{r['ece']:.3f}",
            f"{r['noise_multiplier']:.2f}" if r["noise_multiplier"] else "-",
            str(r["steps"]), f"{r['wall_s']:.0f}",
        )  # fmt: skip
    console.print(f"seed student (public rows, no DP): accuracy {seed['accuracy']:.3f}")
    console.print(table)
    if len({r.get("trainer_seed") for r in results}) > 1:
        console.print(_spread(results))
    name = "dp_sweep.json" if args.sweep else "dp_curve.json"
    (args.out / name).write_text(json.dumps({"seed": seed, "results": results}, indent=2))
    console.print(f"wrote {args.out / name}")


def _spread(results: list[dict[str, Any]]) -> Table:
    """Per epsilon over the trainer seeds: the median accuracy and gap, and their range."""
    table = Table("epsilon", "seeds", "accuracy median", "range", "vs no-DP median (pts)",
                  "range (pts)")  # fmt: skip
    for eps in dict.fromkeys(r["epsilon_target"] for r in results):
        rows = [r for r in results if r["epsilon_target"] == eps]
        acc = [r["accuracy"] for r in rows]
        gaps = [100 * (r["accuracy"] - b["accuracy"]) for r in rows
                if (b := _baseline(results, r)) is not None and eps is not None]  # fmt: skip
        table.add_row(
            "no DP" if eps is None else f"{eps:g}", str(len(rows)), f"{np.median(acc):.3f}",
            f"{min(acc):.3f}-{max(acc):.3f}", f"{np.median(gaps):+.1f}" if gaps else "-",
            f"{min(gaps):+.1f} to {max(gaps):+.1f}" if gaps else "-",
        )  # fmt: skip
    return table


if __name__ == "__main__":
    main()
