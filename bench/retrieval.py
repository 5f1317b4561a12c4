"""Benchmark: retrieval memory — does interpolating the student with its k nearest training
rows help, and what does the lookup cost a query?

Usage: python bench/retrieval.py [--seeds 0,1,2] [--per-intent 20] [--eval dev|test]

Per seed, all 77 Banking77 intents: the student (trainer defaults, the seed student's epochs)
trains on ``--per-intent`` rows per intent (+3 validation rows, as bench/open_intent.py draws
them). Its mean-pooled embeddings of the training rows are the memory
(:mod:`tutorloop.evaluation.retrieval`); k, tau and the interpolation weight (0 = off) are
chosen on the validation rows by log loss; the scored rows (``--eval test``: the test file;
``dev``: 10 other train rows per intent) give accuracy and ECE of the student alone and
interpolated. Then the lookup's cost: single-query latency of the memory at 1k, 10k and 50k
rows (random unit keys, 384 dimensions), against the student's own single-query forward
(torch fp32) in the same run. Issue #16's target: serving p95 with retrieval <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from tutorloop.evaluation.metrics import ece
from tutorloop.evaluation.retrieval import RetrievalMemory, choose_interpolation, interpolate
from tutorloop.infra.settings import load_settings
from tutorloop.labeling.models import resolve_model
from tutorloop.registry.onnx_model import calibrated_proba
from tutorloop.trainer.inference import predict_logits_and_embeddings
from tutorloop.trainer.student import load_student
from tutorloop.trainer.train import train_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dp import _dataset, _row  # the same dataset rows as the DP bench
from open_intent import _splits, split_parser  # the same draws as the open-intent bench

console = Console()


def _run_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    data = _splits(seed, args.per_intent, 0.0, args.eval)
    known, rows = data["known"], data["rows"]
    settings = load_settings()
    cfg = settings.trainer
    student = load_student(resolve_model(cfg.base_model, settings.models_dir), known, cfg)
    dataset = _dataset([_row(t, label, known, split, private=False) for t, label, split in rows],
                       known)  # fmt: skip
    outcome = train_student(student, dataset, cfg, epochs=cfg.bootstrap_epochs)
    index = {label: i for i, label in enumerate(known)}

    def embed(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = student.tokenizer([t for t, _ in pairs], truncation=True,
                                max_length=cfg.max_length)["input_ids"]  # fmt: skip
        logits, emb = predict_logits_and_embeddings(student.model, student.tokenizer, ids)
        probs = calibrated_proba(logits.numpy(), outcome.temperature)
        return probs, emb.numpy(), np.array([index[label] for _, label in pairs])

    train = [(t, label) for t, label, split in rows if split == "train"]
    val = [(t, label) for t, label, split in rows if split == "validation"]
    _, train_emb, train_y = embed(train)
    memory = RetrievalMemory.build(train_emb, train_y, len(known))
    val_p, val_emb, val_y = embed(val)
    k, tau, weight = choose_interpolation(val_p, memory, val_emb, val_y)
    test_p, test_emb, test_y = embed(data["in_scope"])
    mixed = interpolate(test_p, memory.label_distribution(test_emb, k=k, tau=tau), weight)
    result = {
        "accuracy": float(np.mean(test_p.argmax(1) == test_y)),
        "accuracy_mixed": float(np.mean(mixed.argmax(1) == test_y)),
        "ece": ece(test_p, test_y), "ece_mixed": ece(mixed, test_y),
        "k": k, "tau": tau, "weight": weight,
        "forward_ms": _forward_ms(student, [t for t, _ in data["in_scope"][:200]], cfg.max_length),
    }  # fmt: skip
    console.print(f"seed {seed}: {result}")
    return result


def _forward_ms(student: object, texts: list[str], max_length: int) -> float:
    """Median single-query forward of the student (torch fp32), the baseline of the lookup."""
    model, tokenizer = student.model, student.tokenizer  # type: ignore[attr-defined]
    times = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            started = time.perf_counter()
            model(**enc)
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def _lookup_ms(rows: int, queries: int = 500) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    memory = RetrievalMemory.build(rng.normal(size=(rows, 384)), rng.integers(0, 77, rows), 77)
    times = []
    for query in rng.normal(size=(queries, 1, 384)):
        started = time.perf_counter()
        memory.label_distribution(query, k=10, tau=0.05)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> None:
    args = split_parser(__doc__).parse_args()
    torch.manual_seed(0)
    runs = [_run_seed(int(s), args) for s in args.seeds.split(",")]
    table = Table(title=f"retrieval memory, {args.per_intent} rows per intent, {args.eval} "
                        f"rows, median (range) of {len(runs)} seeds")  # fmt: skip
    for column in ("metric", "student", "student + memory"):
        table.add_column(column)
    for name in ("accuracy", "ece"):
        cells = []
        for key in (name, f"{name}_mixed"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        table.add_row(name, *cells)
    console.print(table)
    chosen = ", ".join(f"({r['k']:g}, {r['tau']:g}, {r['weight']:g})" for r in runs)
    console.print(f"chosen (k, tau, weight) per seed: {chosen}")
    forward = statistics.median(r["forward_ms"] for r in runs)
    for rows in (1_000, 10_000, 50_000):
        median, p95 = _lookup_ms(rows)
        console.print(
            f"memory of {rows:,} rows: lookup median {median:.3f} ms, p95 {p95:.3f} ms"
            f" = {median / forward:.2f}x the student's forward ({forward:.2f} ms)"
        )


if __name__ == "__main__":
    main()
