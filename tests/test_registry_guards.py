"""The registry's guards, on real warehouse rows and artifact folders (no training needed):
rollback cannot skip the gates, the champion's files are never rewritten, a champion that
cannot be loaded fails the comparison closed, and cards are written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tests.conftest import run_cli
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry.contract import default_contract, load_contract
from tutorloop.registry.contract_file import write_contract
from tutorloop.registry.gates import (
    GateContext,
    GateResult,
    _store,
    _versus_champion,
    stored_gates,
)
from tutorloop.registry.lifecycle import (
    PromotionRefusedError,
    evaluate_candidate,
    history,
    promote,
    rollback,
)
from tutorloop.registry.rewrite import rewritten_copy
from tutorloop.registry.store import CARD, get, register_candidate, verify
from tutorloop.registry.version_rows import EvaluationSet

LABELS = ["card_arrival", "lost_or_stolen_card"]


def _settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "d")


def _version(warehouse: Warehouse, settings: Settings, name: str) -> str:
    staged = settings.models_artifacts_dir / ".staging" / name
    staged.mkdir(parents=True)
    (staged / "model.int8.onnx").write_bytes(b"not a real model")
    card = {"kind": "student", "dataset_hash": name}
    return register_candidate(
        warehouse, settings, staged, run_id=name, label_set=LABELS, card=card
    ).version


def _gates(
    warehouse: Warehouse, version: str, *, passed: bool, contract: str | None = None
) -> None:
    digest = contract or default_contract(load_settings()).digest
    result = GateResult("accuracy", 0.9 if passed else 0.1, 0.5, ">=", passed)
    _store(warehouse, version, [result], digest, "eval-set")


def test_rollback_to_a_version_that_never_served_needs_its_gates_or_force(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    v1, v2, v3, v4 = (_version(warehouse, settings, f"r{i}") for i in range(4))
    _gates(warehouse, v1, passed=True)
    promote(warehouse, settings, v1, actor="test")
    _gates(warehouse, v2, passed=True)
    promote(warehouse, settings, v2, actor="test")
    _gates(warehouse, v3, passed=False)  # failed a gate; v4 has none

    for target, why in ((v3, "failed gates: accuracy"), (v4, "no gate results")):
        with pytest.raises(PromotionRefusedError, match=f"{target} never served and has {why}"):
            rollback(warehouse, settings, actor="oncall", to=target)
        with pytest.raises(PromotionRefusedError, match="--force needs --reason"):
            rollback(warehouse, settings, actor="oncall", to=target, force=True)
    assert get(warehouse, v2).status == "champion"

    forced = rollback(warehouse, settings, actor="oncall", to=v3, force=True, reason="hotfix")
    assert forced.forced and get(warehouse, v3).status == "champion"
    # v1 served before: going back to it needs no force, and is recorded as not forced.
    back = rollback(warehouse, settings, actor="oncall", to=v1)
    assert not back.forced
    assert [(c.action, c.to_version, c.forced) for c in history(warehouse)][-2:] == [
        ("rollback", v3, True),
        ("rollback", v1, False),
    ]


def test_rollback_needs_gates_passed_under_the_contract_now_in_force(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    v1, v2 = _version(warehouse, settings, "k1"), _version(warehouse, settings, "k2")
    _gates(warehouse, v1, passed=True)
    promote(warehouse, settings, v1, actor="test")
    _gates(warehouse, v2, passed=True)  # judged under the built-in contract
    stricter = default_contract(settings).model_copy(update={"version": "2"})
    write_contract(stricter, tmp_path / "d" / "contract.toml")
    assert load_contract(settings).digest == stricter.digest
    with pytest.raises(PromotionRefusedError, match="gates judged under another contract"):
        rollback(warehouse, settings, actor="oncall", to=v2)
    _gates(warehouse, v2, passed=True, contract=stricter.digest)
    done = rollback(warehouse, settings, actor="oncall", to=v2)
    assert not done.forced
    recorded = warehouse.query("SELECT contract_hash FROM promotions WHERE to_version = ?", [v2])
    assert recorded == [(stricter.digest,)]


def test_rollback_cli_refuses_in_one_line_and_records_a_forced_rollback(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    v1, v2 = _version(warehouse, settings, "c1"), _version(warehouse, settings, "c2")
    _gates(warehouse, v1, passed=True)
    promote(warehouse, settings, v1, actor="test")
    env = {"TUTORLOOP_DATA_DIR": str(settings.data_dir)}
    refused = run_cli("registry", "rollback", "--to", v2, env=env)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert f"{v2} never served and has no gate results" in refused.stderr
    done = run_cli(
        "registry", "rollback", "--to", v2, "--force", "--reason", "drill", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forced"] is True


def test_the_champion_is_never_re_exported(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    v1 = _version(warehouse, settings, "e1")
    promote(warehouse, settings, v1, actor="test", force=True, reason="first")
    folder = get(warehouse, v1).artifact_dir
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(PromotionRefusedError, match=f"{v1} is the champion"):
        evaluate_candidate(warehouse, settings, v1)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert get(warehouse, v1).status == "champion"


def test_a_champion_that_cannot_be_loaded_fails_the_comparison_closed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    champ = get(warehouse, _version(warehouse, settings, "f1"))  # its "model" is garbage
    candidate = get(warehouse, _version(warehouse, settings, "f2"))
    rows = EvaluationSet(["where is my card"], ["card_arrival"], "eval", "e")
    ctx = GateContext(load_contract(settings), rows)
    [result] = _versus_champion(
        warehouse, ctx, candidate, champ, cast(Any, None), cast(Any, None)
    )  # fmt: skip
    assert result.gate == "champion_unavailable" and not result.passed
    assert f"champion {champ.version} could not be loaded" in result.detail
    _store(warehouse, candidate.version, [result], ctx.contract.digest, rows.digest)
    with pytest.raises(PromotionRefusedError, match="failed gates: champion_unavailable"):
        promote(warehouse, settings, candidate.version, actor="test")
    assert [g.gate for g in stored_gates(warehouse, candidate.version)] == ["champion_unavailable"]


def test_cards_are_written_whole(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    warehouse = open_warehouse(settings)
    folder = get(warehouse, _version(warehouse, settings, "w1")).artifact_dir
    card = verify(folder)  # checksums of every file match the card
    assert json.loads((folder / CARD).read_text()) == card
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_rewrite_happens_in_a_copy_that_replaces_the_folder_in_one_step(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "v3"
    folder.mkdir(parents=True)
    (folder / "card.json").write_text("old card")
    (folder / "model_int8.onnx").write_bytes(b"old model")
    with pytest.raises(RuntimeError), rewritten_copy(folder) as staging:
        (staging / "model_int8.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")
    assert (folder / "model_int8.onnx").read_bytes() == b"old model"  # untouched
    with rewritten_copy(folder) as staging:
        assert staging != folder and (staging / "card.json").read_text() == "old card"
        (staging / "model_int8.onnx").write_bytes(b"new model")
        (staging / "card.json").write_text("new card")
        assert (folder / "card.json").read_text() == "old card"  # not visible until the swap
    assert (folder / "model_int8.onnx").read_bytes() == b"new model"
    assert (folder / "card.json").read_text() == "new card"
    assert not list((tmp_path / "models" / ".staging").iterdir())


def test_open_set_abstentions_count_as_out_of_scope_answers_in_the_oos_gates() -> None:
    # 40 out-of-scope rows the student answers with a known label, 30 of which its open-set
    # scorer abstains on; 40 in-scope rows answered right. Counted (fallback.open_set), those
    # 30 are out-of-scope answers: recall 0.75, precision 1; not counted, the recall is 0.
    from tutorloop.registry.gates import _quality

    labels = ["card_arrival", "lost_or_stolen_card", "oos"]
    contract = default_contract(load_settings(), labels, oos_label="oos")
    targets = np.array([0] * 40 + [2] * 40)
    probs = np.zeros((80, 3))
    probs[:40, 0] = 1.0
    probs[40:, 1] = 1.0  # every unknown input answered as a known intent
    unknown = np.r_[np.zeros(40, dtype=bool), np.ones(30, dtype=bool), np.zeros(10, dtype=bool)]
    rows = EvaluationSet(["t"] * 80, [labels[t] for t in targets], "eval", "digest")
    ctx = GateContext(contract, rows)
    counted = {g.gate: g.value for g in _quality(ctx, probs, targets, labels, unknown)}
    assert (counted["oos_recall"], counted["oos_precision"]) == (0.75, 1.0)
    ignored = {g.gate: g.value for g in _quality(ctx, probs, targets, labels, ~np.ones(80, bool))}
    assert ignored["oos_recall"] == 0.0
