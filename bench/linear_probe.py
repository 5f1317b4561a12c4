"""Benchmark: the student's own head against a logistic probe on sentence embeddings.

Usage: python bench/linear_probe.py [--seeds 0,1,2] [--per-intent 20] [--eval dev|test]

The open-intent protocol of ``bench/open_intent.py`` (its splits: 25% of the intents unknown,
``--per-intent`` training rows per known intent). Per seed the student trains with the trainer
defaults; then, for each representation — the fine-tuned student's mean-pooled embedding, the
same network before fine-tuning (its frozen base), and the local teacher's frozen encoder
(all-mpnet-base-v2) — a logistic regression (C = 50, unit-normalized rows) is fitted on the
training rows, and the relative Mahalanobis score on that representation is fitted too.
Reported on the scored rows: in-scope accuracy of the student's head and of each probe, and
per representation the open-set AUROC and the oracle OOS recall (the best threshold on the
scored rows themselves within 2 points of accuracy: an upper bound for any threshold rule).
The question: how much of what the student gets wrong its own embedding already knows, and how
far the open-intent targets of issue #16 are from each representation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from tutorloop.evaluation.metrics import FloatArray
from tutorloop.evaluation.open_set import RelativeMahalanobis, auroc
from tutorloop.evaluation.retrieval import unit_rows
from tutorloop.infra.settings import load_settings
from tutorloop.labeling.embeddings import Encoder
from tutorloop.labeling.models import resolve_model
from tutorloop.registry.onnx_model import calibrated_proba
from tutorloop.trainer.inference import predict_logits_and_embeddings
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dp import _dataset, _row  # the same dataset rows as the DP bench
from open_intent import _oracle_recall, _splits, split_parser  # the open-intent splits

console = Console()
_TEACHER = "all-mpnet-base-v2"


def _probe(train: FloatArray, y: np.ndarray, rows: FloatArray) -> FloatArray:
    head = LogisticRegression(C=50.0, max_iter=3000).fit(unit_rows(train), y)
    return np.asarray(head.predict_proba(unit_rows(rows)))


def _run_seed(seed: int, args: argparse.Namespace, teacher: Encoder) -> dict[str, float]:
    data = _splits(seed, args.per_intent, 0.25, args.eval)
    known, rows = data["known"], data["rows"]
    settings = load_settings()
    cfg = settings.trainer
    student = load_student(resolve_model(cfg.base_model, settings.models_dir), known, cfg)
    index = {label: i for i, label in enumerate(known)}
    train = [t for t, _, split in rows if split == "train"]
    y = np.array([index[label] for _, label, split in rows if split == "train"])
    y_in = np.array([index[label] for _, label in data["in_scope"]])
    texts = {"train": train, "in": [t for t, _ in data["in_scope"]], "out": data["out_of_scope"]}

    def embed(part: str) -> tuple[FloatArray, FloatArray]:
        ids = student.tokenizer(texts[part], truncation=True, max_length=cfg.max_length)
        logits, emb = predict_logits_and_embeddings(student.model, student.tokenizer,
                                                    ids["input_ids"])  # fmt: skip
        return logits.numpy(), emb.numpy()

    reps: dict[str, dict[str, FloatArray]] = {"frozen base": {p: embed(p)[1] for p in texts}}
    reps["teacher encoder"] = {p: teacher.encode(texts[p]) for p in texts}
    dataset = _dataset([_row(t, label, known, split, private=False) for t, label, split in rows],
                       known)  # fmt: skip
    outcome = train_student(student, dataset, cfg, epochs=cfg.bootstrap_epochs)
    tuned = {p: embed(p) for p in texts}
    reps = {"fine-tuned student": {p: e for p, (_, e) in tuned.items()}, **reps}
    head = calibrated_proba(tuned["in"][0], outcome.temperature).argmax(1) == y_in
    result = {"student head: accuracy": float(head.mean())}
    for name, rep in reps.items():
        correct = _probe(rep["train"], y, rep["in"]).argmax(1) == y_in
        scorer = RelativeMahalanobis.fit(rep["train"], y)
        inside, outside = scorer.score(rep["in"]), scorer.score(rep["out"])
        result[f"{name} probe: accuracy"] = float(correct.mean())
        result[f"{name}: rel. Mahalanobis AUROC"] = auroc(inside, outside)
        result[f"{name}: oracle OOS recall"] = _oracle_recall(inside, correct, outside, 0.02)
    console.print(f"seed {seed}: {json.dumps({k: round(v, 3) for k, v in result.items()})}")
    return result


def main() -> None:
    args = split_parser(__doc__).parse_args()
    teacher = Encoder(resolve_model(_TEACHER, load_settings().models_dir))
    runs: list[dict[str, Any]] = [_run_seed(int(s), args, teacher) for s in args.seeds.split(",")]
    table = Table(title=f"{args.per_intent} rows per known intent, {args.eval} rows")
    table.add_column("measure")
    table.add_column("median (per seed)")
    for key in runs[0]:
        values = [run[key] for run in runs]
        per_seed = " / ".join(f"{v:.3f}" for v in values)
        table.add_row(key, f"{statistics.median(values):.3f} ({per_seed})")
    console.print(table)


if __name__ == "__main__":
    main()
