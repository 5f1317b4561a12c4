"""Dataset versions on disk and in the warehouse: content hash, save, record, list.

:mod:`tutorloop.trainer.dataset` decides which rows go in; this module names the result by
its content hash, saves it once under ``<datasets>/<hash>`` and records ``dataset_versions``
and ``dataset_members`` (trainer owns both tables).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import ClassLabel, Dataset, Features, Value
from datasets.utils.logging import disable_progress_bar

from tutorloop.infra.hashing import JsonDigest
from tutorloop.infra.tables import PUBLIC_REASONS, Split
from tutorloop.infra.warehouse import Warehouse, insert_arrow
from tutorloop.trainer.dataset import SPLITS, DatasetSpec, DatasetVersion, Row, assemble


def content_hash(spec: DatasetSpec, rows: Sequence[Row]) -> str:
    """sha256 over the spec and every row, in a canonical order."""
    digest = JsonDigest().add(spec.to_dict())
    for row in sorted(rows, key=lambda r: (r.split, r.case_id)):
        digest.add([row.case_id, row.text, row.label, row.soft_targets, row.source, row.split,
                    row.replay, row.private], compact=True)  # fmt: skip
    return digest.hexdigest()


def dataset_features(labels: Sequence[str]) -> Features:
    """The columns of a saved dataset version, as training reads them."""
    return Features(
        {
            "case_id": Value("string"),
            "text": Value("string"),
            "label": ClassLabel(names=list(labels)),
            "soft_targets": datasets.Sequence(Value("float32"), length=len(labels)),
            "source": Value("string"),
            "split": Value("string"),
            "replay": Value("bool"),
            "private": Value("bool"),
        }
    )


def _save(rows: Sequence[Row], spec: DatasetSpec, path: Path) -> None:
    """One ``datasets.Dataset`` with a ``split`` column (train / validation / eval).

    One table rather than a ``DatasetDict``: an empty split (no gold evaluation rows yet)
    saves but does not load back in ``datasets`` 5.
    """

    disable_progress_bar()  # a few seconds of work; the caller shows its own progress
    features = dataset_features(spec.labels)
    index = {label: i for i, label in enumerate(spec.labels)}
    ordered = sorted(rows, key=lambda r: (SPLITS.index(r.split), r.case_id))
    table = Dataset.from_dict(
        {
            "case_id": [r.case_id for r in ordered],
            "text": [r.text for r in ordered],
            "label": [index[r.label] for r in ordered],
            "soft_targets": [list(r.soft_targets) for r in ordered],
            "source": [r.source for r in ordered],
            "split": [r.split for r in ordered],
            "replay": [r.replay for r in ordered],
            "private": [r.private for r in ordered],
        },
        features=features,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "dataset"
        table.save_to_disk(str(staged))
        (staged / "tutorloop.json").write_text(json.dumps(spec.to_dict(), indent=2))
        if not path.exists():
            staged.rename(path)


def build_dataset(warehouse: Warehouse, spec: DatasetSpec, root: Path) -> DatasetVersion:
    """Assemble, hash, save under ``root/<hash>`` and record the version and its members."""
    rows, counts = assemble(warehouse, spec)
    dataset_hash = content_hash(spec, rows)
    path = root / dataset_hash
    existing = warehouse.query(
        "SELECT 1 FROM dataset_versions WHERE dataset_hash = ?", [dataset_hash]
    )
    if existing and path.is_dir():
        return DatasetVersion(dataset_hash, path, spec, counts, created=False, rows=rows)
    _save(rows, spec, path)
    members = pa.Table.from_pylist(
        [
            {"dataset_hash": dataset_hash, "case_id": r.case_id, "split": r.split,
             "label": r.label, "label_source": r.source}
            for r in rows
        ]
    )  # fmt: skip
    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO dataset_versions (dataset_hash, spec, counts, n_train, n_validation,"
            " n_eval, path) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                dataset_hash, json.dumps(spec.to_dict(), sort_keys=True),
                json.dumps(counts, sort_keys=True), counts["by_split"].get("train", 0),
                counts["by_split"].get("validation", 0), counts["by_split"].get("eval", 0),
                str(path),
            ],
        )  # fmt: skip
        insert_arrow(con, "dataset_members", members)
    return DatasetVersion(dataset_hash, path, spec, counts, created=True, rows=rows)


def data_window(warehouse: Warehouse, dataset_hash: str) -> tuple[datetime | None, datetime | None]:
    """When the dataset's trained-on cases were captured: the DP ledger's data window."""
    row = warehouse.query(
        "SELECT min(c.ts), max(c.ts) FROM dataset_members m JOIN cases c USING (case_id)"
        " WHERE m.dataset_hash = ? AND m.split <> ?",
        [dataset_hash, Split.EVAL],
    )
    return (row[0][0], row[0][1]) if row else (None, None)


def private_rows_by_user(
    warehouse: Warehouse, dataset_hash: str
) -> dict[tuple[str, str], list[str]]:
    """The private rows DP-SGD may sample, by (tenant, user): their case ids.

    Those of the train split and of the validation split (a DP run trains on its private
    validation rows too, since choosing by them would spend privacy the accountant does not
    count). Public (imported) rows spend none.
    """
    public = ", ".join("?" for _ in PUBLIC_REASONS)
    rows = warehouse.query(
        "SELECT c.tenant_id, c.user_id, m.case_id FROM dataset_members m JOIN cases c"
        " USING (case_id) WHERE m.dataset_hash = ? AND m.split IN (?, ?)"
        f" AND c.capture_reason NOT IN ({public}) ORDER BY m.case_id",
        [dataset_hash, Split.TRAIN, Split.VALIDATION, *PUBLIC_REASONS],
    )
    found: dict[tuple[str, str], list[str]] = {}
    for tenant, user, case_id in rows:
        found.setdefault((str(tenant), str(user)), []).append(str(case_id))
    return found


def rows_per_user(warehouse: Warehouse, dataset_hash: str) -> int:
    """The most private rows one user contributed to the dataset (k of group privacy; see
    :func:`private_rows_by_user`). At least 1."""
    by_user = private_rows_by_user(warehouse, dataset_hash)
    return max((len(cases) for cases in by_user.values()), default=1)


def list_dataset_versions(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Dataset versions, newest first."""
    return warehouse.query_dicts(
        "SELECT dataset_hash, created_at, n_train, n_validation, n_eval, counts"
        " FROM dataset_versions ORDER BY created_at DESC"
    )
