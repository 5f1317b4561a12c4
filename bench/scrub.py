"""Benchmark: scrubber throughput on one core, and recall on a development and a held-out split.

Usage: python bench/scrub.py [--records 1000] [--seed 0]

Pinned to one CPU core with one BLAS thread, measures in the same run, on the development
corpus (``privacy.eval_corpus``, what the recognizers were tuned on), on the first held-out
corpus (``privacy.seen_corpus``, retired once its misses were read) and on the held-out corpus
(``privacy.heldout_corpus``, never tuned on): the full scrubber (Presidio + NER-only spaCy +
our recognizers, batched), the regex-only scrubber, and Presidio's default configuration; then
character recall per entity type on both splits. Targets (issues #4, #13): >= 300 texts/s/core
and >= 1.5x Presidio's default; on the held-out split recall >= 0.92 at precision >= 0.85 and
every structured type >= 0.99; Banking77 test queries changed <= 1% (false positives are
studied on the train split, never on test).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - thread caps must be set before numpy loads
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tutorloop.labeling.labeled_csv import read_labeled_csv  # noqa: E402
from tutorloop.privacy import eval_corpus, heldout_corpus, seen_corpus  # noqa: E402
from tutorloop.privacy.evaluation import (  # noqa: E402
    STRUCTURED,
    EvalReport,
    evaluate,
    presidio_default_spans,
)
from tutorloop.privacy.presidio_scrubber import PresidioScrubber  # noqa: E402
from tutorloop.privacy.scrubber import RegexScrubber  # noqa: E402


def _summary(console: Console, split: str, reports: list[EvalReport]) -> None:
    table = Table("scrubber", "texts/s (1 core)", "char recall", "char precision",
                  "structured recall (min)", title=f"{split} split")  # fmt: skip
    for r in reports:
        structured = min(r.per_type_recall.get(t, 1.0) for t in STRUCTURED)
        table.add_row(r.name, f"{r.texts_per_s:,.0f}", f"{r.char_recall:.3f}",
                      f"{r.char_precision:.3f}", f"{structured:.3f}")  # fmt: skip
    console.print(table)


def _per_type(console: Console, splits: dict[str, list[EvalReport]]) -> None:
    table = Table("entity type", *(f"{split}: {r.name}" for split, rs in splits.items()
                                   for r in rs if r.name != "regex only"))  # fmt: skip
    reports = [r for rs in splits.values() for r in rs if r.name != "regex only"]
    for entity in sorted({t for r in reports for t in r.per_type_recall}):
        cells = [r.per_type_recall.get(entity) for r in reports]
        table.add_row(entity, *("-" if c is None else f"{c:.3f}" for c in cells))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    console = Console(width=140)
    full = PresidioScrubber()
    full.spans_batch(["warm up the model"])
    default = presidio_default_spans()
    splits: dict[str, list[EvalReport]] = {}
    for split, corpus in (
        ("development", eval_corpus),
        ("seen", seen_corpus),
        ("held-out", heldout_corpus),
    ):
        records = corpus.generate(args.records, args.seed)
        splits[split] = [
            evaluate("full (presidio+ours)", records, full.spans_batch),
            evaluate("regex only", records, RegexScrubber().spans_batch),
            evaluate("presidio default", records, default),
        ]
        _summary(console, split, splits[split])
    _per_type(console, splits)
    full_rate, base = splits["development"][0].texts_per_s, splits["development"][2].texts_per_s
    console.print(
        f"full scrubber: {full_rate:,.0f} texts/s = {full_rate / base:.2f}x Presidio default "
        "(target >= 300 texts/s/core, >= 1.5x)"
    )
    banking = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "test.csv"
    if banking.is_file():
        texts = read_labeled_csv(banking).texts
        changed = sum(r.text != t for r, t in zip(full.scrub_batch(texts), texts, strict=True))
        console.print(
            f"Banking77 test queries changed by the full scrubber: {changed}/{len(texts)} = "
            f"{changed / len(texts):.2%} (target <= 1%)"
        )


if __name__ == "__main__":
    main()
