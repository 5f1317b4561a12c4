"""Label QA (confident learning) on real MiniLM embeddings of Banking77 rows: it drops teacher
labels that were flipped, keeps human labels and evaluation rows, and stays out of DP runs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from tests.test_trainer import TRAIN, tiny_settings
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.models import resolve_model
from tutorloop.trainer.dataset_store import dataset_features
from tutorloop.trainer.label_filter import filter_teacher_labels, label_issues
from tutorloop.trainer.student import load_student


def test_flipped_labels_stand_out_among_separable_classes() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32)) * 3
    labels = np.repeat(np.arange(6), 40)
    points = centres[labels] + rng.normal(size=(240, 32))
    flipped = rng.choice(240, 24, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 6
    issues = label_issues(points, noisy, 6, seed=0)
    found = set(np.flatnonzero(issues).tolist())
    assert len(found & set(flipped.tolist())) >= 20  # most flips
    assert len(found - set(flipped.tolist())) <= 3  # and little else
    assert not label_issues(points, labels, 6, seed=0).any()


def _rows(labels: list[str]) -> tuple[Any, dict[str, str]]:
    """The train slice: every 10th row evaluation; of the rest, 12% teacher labels flipped and
    8 human labels flipped (a person's label is trusted even when the data disagree)."""
    data = read_labeled_csv(TRAIN)
    rng = random.Random(3)
    rows, truth = [], {}
    for i, (text, label) in enumerate(zip(data.texts, data.labels, strict=True)):
        case_id = f"case-{i:03d}"
        split = "eval" if i % 10 == 0 else ("validation" if i % 10 == 5 else "train")
        source, given = "teacher", label
        if split != "eval" and rng.random() < 0.12:
            given = rng.choice([x for x in labels if x != label])
        elif split != "eval" and rng.random() < 0.03:
            source, given = "human", rng.choice([x for x in labels if x != label])
        truth[case_id] = label
        one_hot = [1.0 if x == given else 0.0 for x in labels]
        rows.append({"case_id": case_id, "text": text, "label": labels.index(given),
                     "soft_targets": one_hot, "source": source, "split": split,
                     "replay": False, "private": True})  # fmt: skip
    return Dataset.from_list(rows, features=dataset_features(labels)), truth


def test_the_filter_drops_flipped_teacher_labels_and_nothing_a_person_gave(
    tmp_path: Path,
) -> None:
    settings = tiny_settings(tmp_path / "d")
    cfg = settings.trainer.model_copy(update={"quantization": "none"})
    labels = sorted(set(read_labeled_csv(TRAIN).labels))
    student = load_student(resolve_model(cfg.base_model, settings.models_dir), labels, cfg)
    rows, truth = _rows(labels)
    by_id = {r["case_id"]: r for r in rows}
    wrong = {c for c, r in by_id.items() if labels[r["label"]] != truth[c]}
    wrong_teacher = {c for c in wrong if by_id[c]["source"] == "teacher"}
    assert len(wrong_teacher) >= 25 and len(wrong - wrong_teacher) >= 4

    kept, report = filter_teacher_labels(student, rows, "confident_learning", seed=0, dp=False)
    assert report is not None and report.off_reason is None
    dropped = set(report.dropped_case_ids)
    assert set(kept["case_id"]) == set(by_id) - dropped and len(kept) == len(rows) - len(dropped)
    assert report.checked == sum(1 for r in rows if r["split"] != "eval")
    # Mostly the flipped teacher labels; never a person's label or an evaluation row.
    assert len(dropped & wrong_teacher) >= 0.6 * len(wrong_teacher)
    assert len(dropped & wrong_teacher) >= 0.65 * len(dropped)  # 12% by chance
    assert all(by_id[c]["source"] == "teacher" and by_id[c]["split"] != "eval" for c in dropped)
    assert report.flagged > len(dropped)  # the flipped human labels were flagged, and kept
    card = report.card()
    assert card["dropped"] == len(dropped) and card["method"] == "confident_learning"

    same, none = filter_teacher_labels(student, rows, "off", seed=0, dp=False)
    assert same is rows and none is None
    untouched, dp_report = filter_teacher_labels(
        student, rows, "confident_learning", seed=0, dp=True
    )
    assert untouched is rows and dp_report is not None
    assert dp_report.off_reason == "not in DP runs" and dp_report.dropped_case_ids == []
