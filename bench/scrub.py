"""Benchmark: scrubber throughput on one core, with recall beside each figure.

Usage: python bench/scrub.py [--records 1000] [--seed 0]

Generates the span-annotated corpus (``tutorloop privacy corpus``) and, pinned to one CPU core
with one BLAS thread, measures in the same run: the full scrubber (Presidio + NER-only spaCy +
our recognizers, batched), the regex-only scrubber, and Presidio's default configuration.
Target (issue #4): >= 300 texts/s/core for the full scrubber. Also prints the share of the
Banking77 test queries the full scrubber changes (text without PII should pass untouched;
issue #13 asks <= 1%).
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
from tutorloop.privacy.eval_corpus import generate  # noqa: E402
from tutorloop.privacy.evaluation import STRUCTURED, evaluate, presidio_default_spans  # noqa: E402
from tutorloop.privacy.presidio_scrubber import PresidioScrubber  # noqa: E402
from tutorloop.privacy.scrubber import RegexScrubber  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    console = Console(width=120)
    records = generate(args.records, args.seed)
    full = PresidioScrubber()
    full.spans_batch(["warm up the model"])
    reports = [
        evaluate("full (presidio+ours)", records, full.spans_batch),
        evaluate("regex only", records, RegexScrubber().spans_batch),
        evaluate("presidio default", records, presidio_default_spans()),
    ]
    table = Table(
        "scrubber", "texts/s (1 core)", "char recall", "char precision", "structured recall (min)"
    )
    for r in reports:
        structured = min(r.per_type_recall.get(t, 1.0) for t in STRUCTURED)
        table.add_row(
            r.name,
            f"{r.texts_per_s:,.0f}",
            f"{r.char_recall:.3f}",
            f"{r.char_precision:.3f}",
            f"{structured:.3f}",
        )
    console.print(table)
    full_rate, base = reports[0].texts_per_s, reports[2].texts_per_s
    console.print(
        f"full scrubber: {full_rate:,.0f} texts/s = {full_rate / base:.2f}x Presidio default "
        "(target >= 300 texts/s/core)"
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
