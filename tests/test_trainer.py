"""The trainer on real weights (MiniLM, 4-bit through bitsandbytes on CPU), a real DuckDB file
and the real CLI: tiny data and few steps, the whole path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.warehouse_cases import capture
from tutorloop.infra.machine import training_path
from tutorloop.infra.settings import Settings, load_settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.teacher_local import fit_local_teacher
from tutorloop.loop.cycle import LabelSetMismatchError, bootstrap, run_cycle, sample_per_label
from tutorloop.privacy.dp_plan import DPWontLearnError
from tutorloop.registry.store import ArtifactIntegrityError, champion, get, verify
from tutorloop.registry.torch_model import load_torch_student
from tutorloop.trainer.dataset import EmptyDatasetError

DATA = Path(__file__).parent / "data"
TRAIN = DATA / "banking77_train_slice.csv"
TEST = DATA / "banking77_test_slice.csv"

TINY = {
    "epochs": 1,
    "bootstrap_epochs": 3,
    "batch_size": 16,
    "max_length": 32,
    "evals_per_epoch": 1,
}


def tiny_settings(data_dir: Path, **sections: Any) -> Settings:
    """Tiny training; no export and gates unless a test asks (the registry tests do)."""
    trainer = TINY | sections.pop("trainer", {})
    privacy = {"scrubber": "regex"} | sections.pop("privacy", {})
    registry = {"gate_after_training": False} | sections.pop("registry", {})
    return load_settings(
        data_dir=data_dir, trainer=trainer, privacy=privacy, registry=registry, **sections
    )


def tiny_env(data_dir: Path) -> dict[str, str]:
    env = {f"TUTORLOOP_TRAINER__{k.upper()}": str(v) for k, v in TINY.items()}
    return env | {
        "TUTORLOOP_DATA_DIR": str(data_dir),
        "TUTORLOOP_PRIVACY__SCRUBBER": "regex",
        "TUTORLOOP_REGISTRY__GATE_AFTER_TRAINING": "false",
    }


def expected_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _bootstrap(settings: Settings) -> str:
    warehouse = open_warehouse(settings)
    seed = sample_per_label(read_labeled_csv(TRAIN), 10, 0)
    report = bootstrap(settings, warehouse, seed, source="seed", actor="test")
    assert report.version is not None
    return report.version


def _promote(warehouse: Warehouse, version: str) -> None:
    with warehouse.transaction() as con:
        con.execute("UPDATE model_versions SET status = 'retired' WHERE status = 'champion'")
        con.execute("UPDATE model_versions SET status = 'champion' WHERE version = ?", [version])


def test_bootstrap_through_the_cli_registers_a_reproducible_candidate(tmp_path: Path) -> None:
    env = tiny_env(tmp_path / "d")
    imported = run_cli("dataset", "import", "--data", str(TEST), "--eval", env=env)
    assert imported.returncode == 0, imported.stderr
    done = run_cli(
        "trainer", "bootstrap", "--data", str(TRAIN), "--per-label", "10", "--json",
        env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The default ("auto") trains nf4 where bitsandbytes has a fast kernel, fp32 LoRA elsewhere.
    expected = training_path("auto")
    assert report["version"] == "v1" and report["quantization"] == expected.quantization
    assert report["fallback_reason"] is None
    evaluation = report["metrics"]["eval"]
    assert evaluation["n"] == 160
    assert evaluation["accuracy"] > 0.3  # 8 labels: chance is 0.125
    assert 0 < report["metrics"]["temperature"] < 20

    settings = tiny_settings(tmp_path / "d")
    warehouse = open_warehouse(settings)
    [run] = warehouse.query_dicts("SELECT * FROM training_runs")
    assert run["status"] == "succeeded" and run["dataset_hash"] == report["dataset_hash"]
    assert run["quantization"] == expected.quantization and run["seed"] == 0
    assert json.loads(run["config"])["training_path"] == {
        "requested": "auto",
        "chosen": expected.quantization,
        "reason": expected.reason,
        "fast_4bit_kernel": expected.fast_kernel,
    }
    assert json.loads(run["package_versions"])["torch"].startswith("2.")
    hardware = json.loads(run["hardware"])
    assert hardware["cpus"] >= 1 and hardware["cpu_capability"] == expected_capability()
    assert json.loads(run["config"])["trainer"]["lora_r"] == 16
    version = get(warehouse, "v1")
    assert version.status == "candidate" and len(version.label_set) == 8
    card = verify(version.artifact_dir)
    assert card["quantization_requested"] == "auto"
    assert card["quantization_reason"] == expected.reason
    assert card["dataset_hash"] == report["dataset_hash"] and "adapter/adapter_config.json" in {
        *card["files"]
    }
    student = load_torch_student(version.artifact_dir)
    probs = student.predict_proba(["I still have not received my new card"])
    assert probs.shape == (1, 8) and abs(float(probs.sum()) - 1) < 1e-4


def test_a_cycle_relabels_builds_and_warm_starts_from_the_champion(tmp_path: Path) -> None:
    # With representation distillation on (the teacher's encoder embeds the training rows) and
    # the label filter on (it checks every training and validation row before the retrain).
    settings = tiny_settings(
        tmp_path / "d", teacher={"encoder": "all-minilm-l6-v2"},
        trainer={"representation_weight": 1.0, "label_filter": "confident_learning"},
    )  # fmt: skip
    warehouse = open_warehouse(settings)
    fit_local_teacher(
        read_labeled_csv(TRAIN), settings.teacher_path, encoder="all-minilm-l6-v2",
        models_dir=settings.models_dir,
    )  # fmt: skip
    first = _bootstrap(settings)
    _promote(warehouse, first)
    capture(warehouse, read_labeled_csv(TEST).texts[:64])
    report = run_cycle(settings, warehouse)
    assert report.version == "v2"
    assert report.relabel is not None and report.relabel["labeled"] == 64
    assert report.dataset_counts["new"] == 64 and report.dataset_counts["replay"] > 0
    card = get(warehouse, "v2").card
    assert card["warm_start_from"] == first
    assert card["metrics"]["representation"] == {
        "weight": 1.0, "loss": "cosine", "source": "local:all-minilm-l6-v2", "off_reason": None,
    }  # fmt: skip
    checked = card["metrics"]["label_filter"]
    assert checked["method"] == "confident_learning" and checked["off_reason"] is None
    assert checked["checked"] == report.dataset_counts["by_split"]["train"] + (
        report.dataset_counts["by_split"].get("validation", 0)
    )
    # Only teacher labels can go: the seed rows are human-labeled.
    teacher_cases = {
        c for (c,) in warehouse.query("SELECT case_id FROM labels WHERE source = 'teacher'")
    }
    assert set(checked["dropped_case_ids"]) <= teacher_cases
    assert checked["dropped"] == len(checked["dropped_case_ids"]) <= checked["flagged"]
    champion_dataset = get(warehouse, first).dataset_hash
    spec = warehouse.query(
        "SELECT spec FROM dataset_versions WHERE dataset_hash = ?", [report.dataset_hash]
    )
    assert json.loads(spec[0][0])["previous"] == champion_dataset


def test_bad_inputs_register_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "d"
    env = tiny_env(data_dir)
    empty = run_cli(
        "trainer",
        "run",
        env=env
        | {"TUTORLOOP_TEACHER__BACKEND": "human", "TUTORLOOP_TEACHER__LABELS": '["a", "b"]'},
    )
    assert empty.returncode == 1 and "no training rows" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1

    missing = run_cli(
        "trainer", "bootstrap", "--data", str(TRAIN), "--per-label", "2",
        env=env | {"TUTORLOOP_TRAINER__BASE_MODEL": str(tmp_path / "no-such-model")},
    )  # fmt: skip
    assert missing.returncode == 1 and "no-such-model not found" in missing.stderr

    settings = tiny_settings(data_dir)
    warehouse = open_warehouse(settings)
    first = _bootstrap(settings)
    _promote(warehouse, first)
    capture(warehouse, ["where is my card"], human_labels={0: "card_arrival"})
    other_labels = tiny_settings(
        data_dir, teacher={"backend": "human", "labels": ["card_arrival", "new_label"]}
    )
    with pytest.raises(LabelSetMismatchError, match="differs from champion v1"):
        run_cycle(
            other_labels,
            warehouse,
        )
    adapter = get(warehouse, first).artifact_dir / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-10])
    # The one captured case must be a training row for the run to reach the warm start: with
    # the default eval_fraction its random case id put it in the gold eval set 1 time in 5
    # ("no training rows" instead of the checksum error).
    no_eval = {"TUTORLOOP_TEACHER__BACKEND": "human", "TUTORLOOP_DATASET__EVAL_FRACTION": "0"}
    corrupt = run_cli("trainer", "run", env=env | no_eval)
    assert corrupt.returncode == 1
    assert "adapter/adapter_model.safetensors does not match its checksum" in corrupt.stderr
    with pytest.raises(ArtifactIntegrityError):
        run_cycle(
            tiny_settings(data_dir, teacher={"backend": "human"}, dataset={"eval_fraction": 0.0}),
            warehouse,
        )
    assert [v for (v,) in warehouse.query("SELECT version FROM model_versions")] == ["v1"]
    assert not list((settings.models_artifacts_dir / ".staging").glob("*"))
    assert champion(warehouse) is not None


def test_without_4bit_the_run_falls_back_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    def no_4bit(*args: object, **kwargs: object) -> None:
        raise ImportError("bitsandbytes 4-bit is not available on this machine")

    monkeypatch.setattr(transformers, "BitsAndBytesConfig", no_4bit)
    settings = tiny_settings(tmp_path / "d", trainer={"quantization": "nf4"})
    version = _bootstrap(settings)
    warehouse = open_warehouse(settings)
    [run] = warehouse.query_dicts("SELECT quantization, fallback_reason FROM training_runs")
    assert run["quantization"] == "none"
    assert "bitsandbytes 4-bit is not available" in run["fallback_reason"]
    assert get(warehouse, version).card["fallback_reason"] == run["fallback_reason"]


def test_dp_spends_epsilon_on_private_rows_only_and_a_spent_budget_refuses_the_next(
    tmp_path: Path,
) -> None:
    dp = {"dp_epsilon": 2.0, "epsilon_budget": 3.0}  # head-only DP, the default
    settings = tiny_settings(tmp_path / "d", privacy=dp, teacher={"backend": "human"})
    warehouse = open_warehouse(settings)
    # The seed set is imported (public): the first student trains without DP and spends none.
    first = _bootstrap(settings)
    assert warehouse.query("SELECT count(*) FROM privacy_ledger") == [(0,)]
    seed_accuracy = get(warehouse, first).card["metrics"]["validation"]["accuracy"]
    assert seed_accuracy > 0.3  # 8 labels; the DP seed of old was near chance
    _promote(warehouse, first)
    test = read_labeled_csv(TEST)
    capture(warehouse, test.texts[:96], human_labels=dict(enumerate(test.labels[:96])))
    report = run_cycle(settings, warehouse)
    assert report.version == "v2" and report.dp_plan is not None
    [entry] = warehouse.query_dicts("SELECT * FROM privacy_ledger")
    assert 0 < entry["epsilon"] <= 2.05 and entry["steps"] > 0
    # The accountant's sample is the private rows alone; the replayed seed rows are public.
    private = report.dataset_counts["private_train"]
    assert entry["private_rows"] == private and 0 < private <= 96
    assert entry["public_rows"] > 0 and entry["replayed_private_rows"] == 0
    card = get(warehouse, "v2").card
    # Full-batch steps, as many as the plan chose; the card says which scale was kept.
    assert entry["sample_rate"] == 1.0 and entry["steps"] == card["privacy"]["plan"]["steps"]
    assert card["metrics"]["dp_head"]["steps"] == entry["steps"]
    assert card["metrics"]["dp_head"]["scale"] in (0.0, 0.25, 0.5, 1.0)
    assert card["privacy"]["spent"]["private_rows"] == private
    assert card["privacy"]["plan"]["rows"] == private
    capture(warehouse, test.texts[96:], human_labels=dict(enumerate(test.labels[96:])))
    with pytest.raises(Exception, match="privacy budget exceeded"):
        run_cycle(settings, warehouse)
    assert warehouse.query("SELECT count(*) FROM model_versions") == [(2,)]


def test_a_strict_dp_run_that_cannot_learn_is_refused_before_it_spends(tmp_path: Path) -> None:
    dp = {"dp_epsilon": 0.5, "dp_strict": True}
    settings = tiny_settings(tmp_path / "d", privacy=dp, teacher={"backend": "human"})
    warehouse = open_warehouse(settings)
    _promote(warehouse, _bootstrap(settings))
    test = read_labeled_csv(TEST)
    capture(warehouse, test.texts[:40], human_labels=dict(enumerate(test.labels[:40])))
    with pytest.raises(DPWontLearnError, match=r"noise \d+\.\d+ on the mean gradient, above"):
        run_cycle(settings, warehouse)
    assert warehouse.query("SELECT count(*) FROM privacy_ledger") == [(0,)]
    assert warehouse.query("SELECT count(*) FROM training_runs") == [(1,)]  # the seed only


def test_empty_dataset_error_type(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "d", teacher={"backend": "human", "labels": ["a", "b"]})
    with pytest.raises(EmptyDatasetError):
        run_cycle(settings, open_warehouse(settings))
