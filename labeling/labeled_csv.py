"""Labeled CSV files (text + label columns): seed sets, teacher pools, evaluation sets."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tutorloop.infra.errors import TutorloopError

_LABEL_COLUMNS = ("label", "category", "intent")


class CsvError(TutorloopError):
    """A labeled CSV file is missing, empty or lacks a column."""


@dataclass(frozen=True)
class LabeledRows:
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_set(self) -> list[str]:
        return sorted(set(self.labels))


def read_labeled_csv(
    path: Path, text_col: str = "text", label_col: str | None = None
) -> LabeledRows:
    """Read ``text_col`` and ``label_col`` (default: the first of label/category/intent).

    Rows with an empty text or label are an error naming the line: silently dropping data
    would make a seed set or an evaluation smaller than its owner thinks.
    """
    if not path.is_file():
        raise CsvError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if text_col not in columns:
            raise CsvError(f"{path}: no column {text_col!r} (columns: {', '.join(columns)})")
        if label_col is None:
            label_col = next((c for c in _LABEL_COLUMNS if c in columns), None)
            if label_col is None:
                raise CsvError(
                    f"{path}: no label column (looked for {', '.join(_LABEL_COLUMNS)}); "
                    "name it with --label-col"
                )
        elif label_col not in columns:
            raise CsvError(f"{path}: no column {label_col!r} (columns: {', '.join(columns)})")
        texts: list[str] = []
        labels: list[str] = []
        for line, row in enumerate(reader, start=2):
            text = (row.get(text_col) or "").strip()
            label = (row.get(label_col) or "").strip()
            if not text or not label:
                raise CsvError(f"{path}:{line}: empty {text_col if not text else label_col}")
            texts.append(text)
            labels.append(label)
    if not texts:
        raise CsvError(f"{path}: no rows")
    return LabeledRows(texts, labels)
