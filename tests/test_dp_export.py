"""A DP version ships nothing fitted on private rows: exporting it with or without one private
training row and one private validation row writes the same served temperature, open-set
scorer and parity choice (and the card says what they were fitted on)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_trainer import TEST, TRAIN, tiny_settings
from tests.warehouse_cases import capture
from tutorloop.infra.tables import PUBLIC_REASONS
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.loop.cycle import bootstrap, run_cycle, sample_per_label
from tutorloop.registry.export import export_version
from tutorloop.registry.onnx_model import INT8
from tutorloop.registry.store import get

_SHIPPED_SECTIONS = ("served", "open_set", "export_fitted_on")


def _private_members(warehouse: Warehouse, dataset_hash: str, split: str) -> list[str]:
    marks = ", ".join("?" for _ in PUBLIC_REASONS)
    return [
        str(c)
        for (c,) in warehouse.query(
            "SELECT m.case_id FROM dataset_members m JOIN cases c USING (case_id)"
            f" WHERE m.dataset_hash = ? AND m.split = ? AND c.capture_reason NOT IN ({marks})"
            " ORDER BY m.case_id",
            [dataset_hash, split, *PUBLIC_REASONS],
        )
    ]


@pytest.mark.timeout(600)
def test_a_dp_versions_shipped_files_do_not_depend_on_a_private_row(tmp_path: Path) -> None:
    settings = tiny_settings(
        tmp_path / "d", privacy={"dp_epsilon": 4.0}, teacher={"backend": "human"}
    )
    warehouse = open_warehouse(settings)
    seed = sample_per_label(read_labeled_csv(TRAIN), 20, 0)
    first = bootstrap(settings, warehouse, seed, source="seed", actor="test")
    with warehouse.transaction() as con:
        con.execute(
            "UPDATE model_versions SET status = 'champion' WHERE version = ?", [first.version]
        )
    test = read_labeled_csv(TEST)
    capture(warehouse, test.texts[:120], human_labels=dict(enumerate(test.labels[:120])))
    report = run_cycle(settings, warehouse)
    assert report.dp_plan is not None and report.version is not None
    version = get(warehouse, report.version)
    assert version.dataset_hash is not None
    for name in ("with", "without"):
        shutil.copytree(version.artifact_dir, tmp_path / name)

    export_version(warehouse, replace(version, artifact_dir=tmp_path / "with"))
    dropped = [
        _private_members(warehouse, version.dataset_hash, split)[0]
        for split in ("train", "validation")
    ]
    with warehouse.transaction() as con:
        for case_id in dropped:
            con.execute(
                "DELETE FROM dataset_members WHERE dataset_hash = ? AND case_id = ?",
                [version.dataset_hash, case_id],
            )
    export_version(warehouse, replace(version, artifact_dir=tmp_path / "without"))

    cards = [
        json.loads((tmp_path / name / "card.json").read_text()) for name in ("with", "without")
    ]
    with_row, without_row = ({k: card.get(k) for k in _SHIPPED_SECTIONS} for card in cards)
    assert with_row == without_row
    assert cards[0]["open_set"]["fitted"], cards[0]["open_set"]  # fitted, on public rows
    assert cards[0]["export_fitted_on"].startswith("public rows only")
    for name in ("calibration.json", "open_set.npz"):
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes()
    kept = [card["quantization_export"]["kept_fp32"] for card in cards]
    assert kept[0] == kept[1] and (tmp_path / "with" / INT8).exists()
