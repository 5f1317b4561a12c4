"""The model contract: built-in defaults, `contract init` / `show` through the real CLI, one-line
errors for a bad file, and a hash that follows values, not layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tutorloop.infra.settings import load_settings
from tutorloop.registry.contract import (
    ContractError,
    default_contract,
    load_contract,
    read_contract,
)
from tutorloop.registry.contract_file import render_contract

DATA = Path(__file__).parent / "data" / "banking77_train_slice.csv"


def test_without_a_file_the_contract_is_the_registry_settings(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, registry={"min_accuracy": 0.7, "min_parity": 0.9})
    contract = load_contract(settings)
    assert contract.quality.min_accuracy == 0.7 and contract.parity.min_agreement == 0.9
    assert "built-in defaults" in contract.source
    assert contract.digest == load_contract(settings).digest
    assert contract.digest != load_contract(load_settings(data_dir=tmp_path)).digest


def test_a_rendered_contract_reads_back_to_the_same_hash(tmp_path: Path) -> None:
    contract = default_contract(load_settings(data_dir=tmp_path), ["b", "a", "oos"])
    contract.task.oos_label = "oos"
    path = tmp_path / "contract.toml"
    path.write_text(render_contract(contract))
    again = read_contract(path)
    assert again.digest == contract.digest and again.task.labels == ["b", "a", "oos"]
    # Comments and layout are not content; a value is.
    path.write_text("# a note\n" + render_contract(contract).replace(" = ", "="))
    assert read_contract(path).digest == contract.digest
    path.write_text(render_contract(contract).replace("min_accuracy = 0.5", "min_accuracy = 0.6"))
    assert read_contract(path).digest != contract.digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[quality]\nmin_accuracy = 1.5\n", "quality.min_accuracy"),
        ("[quality]\nmin_acuracy = 0.5\n", "quality.min_acuracy"),
        ('[task]\nlabels = ["a", "b"]\noos_label = "c"\n', "not in task.labels"),
        ("[quality\n", "cannot read the contract"),
        ('[evaluation]\non_insufficient = "ignore"\n', "evaluation.on_insufficient"),
    ],
)
def test_a_bad_contract_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "contract.toml"
    path.write_text(text)
    with pytest.raises(ContractError, match=message):
        read_contract(path)
    result = run_cli("contract", "show", env={"TUTORLOOP_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_contract_init_and_show_through_the_cli(tmp_path: Path) -> None:
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path), "TUTORLOOP_REGISTRY__MAX_ECE": "0.08"}
    made = run_cli("contract", "init", "--data", str(DATA), env=env)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "contract.toml"
    text = path.read_text()
    assert "max_ece = 0.08" in text and text.startswith("# tutorloop model contract")
    shown = json.loads(run_cli("contract", "show", "--json", env=env).stdout)
    with DATA.open(newline="") as fh:
        labels = sorted({row["category"] for row in csv.DictReader(fh)})
    assert shown["task"]["labels"] == labels and shown["source"] == str(path)
    assert shown["sha256"] == read_contract(path).digest
    # An existing contract is not overwritten by accident.
    again = run_cli("contract", "init", env=env)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    oos = run_cli("contract", "init", "--data", str(DATA), "--oos-label", "nope", "--force",
                  env=env)  # fmt: skip
    assert oos.returncode == 1 and "not in task.labels" in oos.stderr
    assert path.read_text() == text
