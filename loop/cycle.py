"""The trainer's jobs: bootstrap a first student, and one retrain cycle.

A cycle is relabel → dataset → train → register → export, quantize, gate (and promote when
every gate passes and ``registry.auto_promote`` is on). Training starts from the champion's adapter
(``trainer.warm_start``) on the new rows plus a replay sample of the champion's dataset. A run
that fails leaves a ``failed`` training run and nothing registered: the adapter is staged in
``<artifacts>/.staging/<run id>`` and moved into the registry only after training succeeded.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.labeled_csv import LabeledRows
from tutorloop.labeling.relabel import RelabelReport
from tutorloop.registry.store import ModelVersion, champion, register_candidate, verify
from tutorloop.trainer.dataset import DatasetSpec, DatasetVersion, build_dataset

log = logging.getLogger(__name__)

# progress(description, total) -> context manager yielding advance(n)
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


class LabelSetMismatchError(TutorloopError):
    """The dataset's label set is not the champion's."""


@dataclass
class CycleReport:
    run_id: str | None = None
    version: str | None = None
    dataset_hash: str | None = None
    relabel: dict[str, Any] | None = None
    dataset_counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = None
    fallback_reason: str | None = None
    epsilon: float | None = None
    seconds: float = 0.0
    gates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _no_progress(
    description: str, total: int | None
) -> AbstractContextManager[Callable[[int], None]]:
    from contextlib import nullcontext

    return nullcontext(lambda n: None)


def sample_per_label(rows: LabeledRows, per_label: int, seed: int) -> LabeledRows:
    """``per_label`` rows of each label (all of a smaller label), chosen by a seeded shuffle."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(rows.labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        keep.extend(members[:per_label])
    keep.sort()
    return LabeledRows([rows.texts[i] for i in keep], [rows.labels[i] for i in keep])


def _data_window(
    warehouse: Warehouse, dataset_hash: str
) -> tuple[datetime | None, datetime | None]:
    row = warehouse.query(
        "SELECT min(c.ts), max(c.ts) FROM dataset_members m JOIN cases c USING (case_id)"
        " WHERE m.dataset_hash = ? AND m.split <> 'eval'",
        [dataset_hash],
    )
    return (row[0][0], row[0][1]) if row else (None, None)


def train_and_register(
    settings: Settings,
    warehouse: Warehouse,
    dataset: DatasetVersion,
    *,
    warm_from: ModelVersion | None,
    progress: ProgressFactory = _no_progress,
    report: CycleReport | None = None,
    epochs: int | None = None,
    evaluate: bool = True,
) -> CycleReport:
    """Train on ``dataset`` (warm-started from ``warm_from``), register a candidate, then let
    the registry export, quantize and gate it (and promote it under ``auto_promote``)."""
    import time

    from datasets import load_from_disk

    from tutorloop.labeling.models import resolve_model
    from tutorloop.privacy.dp import check_budget
    from tutorloop.trainer.runs import finish_run, start_run
    from tutorloop.trainer.student import load_student
    from tutorloop.trainer.train import DPRequest, save_student, train_student

    cfg = settings.trainer
    report = report or CycleReport()
    started = time.monotonic()
    labels = list(dataset.spec.labels)
    if warm_from is not None and sorted(warm_from.label_set) != sorted(labels):
        raise LabelSetMismatchError(
            f"the dataset's label set ({len(labels)} labels) differs from champion "
            f"{warm_from.version}'s ({len(warm_from.label_set)} labels)"
        )
    if warm_from is not None:
        labels = list(warm_from.label_set)  # the head's order is the champion's
        verify(warm_from.artifact_dir)
    base_folder = resolve_model(cfg.base_model, settings.models_dir)
    window = _data_window(warehouse, dataset.dataset_hash)
    dp_on = settings.privacy.dp_epsilon is not None
    if dp_on and window[0] is not None and window[1] is not None:
        assert settings.privacy.dp_epsilon is not None
        check_budget(
            warehouse, settings.privacy.dp_epsilon, budget=settings.privacy.epsilon_budget,
            window_start=window[0], window_end=window[1],
        )  # fmt: skip
    config: dict[str, Any] = {"trainer": cfg.model_dump(), "dataset": dataset.spec.to_dict()}
    config["epochs"] = epochs or cfg.epochs
    config["privacy"] = settings.privacy.model_dump() if dp_on else None
    config["warm_start_from"] = warm_from.version if warm_from else None
    run_id = start_run(
        warehouse, dataset_hash=dataset.dataset_hash, base_model=str(cfg.base_model),
        quantization=cfg.quantization, config=config, seed=cfg.seed,
    )  # fmt: skip
    report.run_id, report.dataset_hash = run_id, dataset.dataset_hash
    staged = settings.models_artifacts_dir / ".staging" / run_id
    try:
        student = load_student(
            base_folder, labels, cfg,
            init_adapter=warm_from.artifact_dir / "adapter" if warm_from else None,
        )  # fmt: skip
        report.quantization, report.fallback_reason = student.quantization, student.fallback_reason
        rows = load_from_disk(str(dataset.path))
        if warm_from is not None and rows.features["label"].names != labels:
            # Re-index the dataset's labels to the champion's head order.
            rows = _reorder_labels(rows, labels)
        dp = DPRequest(settings.privacy, warehouse, run_id, window[0], window[1]) if dp_on else None
        n_train = sum(1 for s in rows["split"] if s == "train")
        epochs = epochs or cfg.epochs
        total_steps = -(-n_train // cfg.batch_size) * epochs
        with progress("training", total_steps) as advance:
            outcome = train_student(student, rows, cfg, dp=dp, on_step=advance, epochs=epochs)
        report.epsilon = outcome.epsilon
        save_student(student, staged, labels, outcome.temperature)
        metrics = {
            **outcome.metrics, "steps": outcome.steps, "epochs_run": outcome.epochs_run,
            "stopped_early": outcome.stopped_early, "history": outcome.history,
            "epsilon": outcome.epsilon,
        }  # fmt: skip
        card = {
            "kind": "student",
            "dataset_hash": dataset.dataset_hash,
            "base_model": str(cfg.base_model),
            "base_model_path": str(base_folder),
            "quantization": student.quantization,
            "fallback_reason": student.fallback_reason,
            "hyperparameters": cfg.model_dump(),
            "seed": cfg.seed,
            "temperature": outcome.temperature,
            "metrics": {k: v for k, v in metrics.items() if k != "history"},
            "warm_start_from": warm_from.version if warm_from else None,
        }
        from tutorloop.trainer.runs import package_versions

        card["package_versions"] = package_versions()
        version = register_candidate(
            warehouse, settings, staged, run_id=run_id, label_set=labels, card=card
        )
        finish_run(
            warehouse, run_id, metrics=metrics, quantization=student.quantization,
            fallback_reason=student.fallback_reason,
        )  # fmt: skip
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        finish_run(warehouse, run_id, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    report.version, report.metrics = version.version, metrics
    if evaluate and settings.registry.gate_after_training:
        from tutorloop.registry.lifecycle import evaluate_candidate

        with progress("export, quantize, gates", None) as advance:
            verdict = evaluate_candidate(
                warehouse, settings, version.version,
                promote_if_passed=settings.registry.auto_promote, actor="trainer",
            )  # fmt: skip
            advance(1)
        report.gates = {
            "passed": verdict.passed,
            "promoted": verdict.promoted,
            "rejected_reason": verdict.rejected_reason,
            "failed": [g.gate for g in verdict.gates if not g.passed],
            "values": {g.gate: g.value for g in verdict.gates},
        }
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _reorder_labels(rows: Any, labels: list[str]) -> Any:
    from datasets import ClassLabel, Sequence, Value

    names = rows.features["label"].names
    position = [names.index(label) for label in labels]
    features = rows.features.copy()
    features["label"] = ClassLabel(names=labels)
    features["soft_targets"] = Sequence(Value("float32"), length=len(labels))

    def remap(row: dict[str, Any]) -> dict[str, Any]:
        row["label"] = labels.index(names[row["label"]])
        row["soft_targets"] = [row["soft_targets"][p] for p in position]
        return row

    return rows.map(remap, features=features)


def bootstrap(
    settings: Settings,
    warehouse: Warehouse,
    rows: LabeledRows,
    *,
    source: str,
    actor: str,
    progress: ProgressFactory = _no_progress,
) -> CycleReport:
    """The first student: import a gold seed set, build its dataset, train from the base."""
    from tutorloop.labeling.gold import import_gold
    from tutorloop.privacy.scrubbing import configured_scrubber

    report = CycleReport()
    import_gold(warehouse, rows, configured_scrubber(settings.privacy), source=source, actor=actor)
    spec = DatasetSpec.from_settings(settings, rows.label_set, previous=None)
    dataset = build_dataset(warehouse, spec, settings.datasets_dir)
    report.dataset_counts = dataset.counts
    return train_and_register(
        settings, warehouse, dataset, warm_from=None, progress=progress, report=report,
        epochs=settings.trainer.bootstrap_epochs,
    )  # fmt: skip


def run_cycle(
    settings: Settings,
    warehouse: Warehouse,
    *,
    progress: ProgressFactory = _no_progress,
) -> CycleReport:
    """relabel → dataset → train → register, with the configured teacher."""
    from tutorloop.labeling.relabel import queue_unlabeled_for_humans, relabel
    from tutorloop.labeling.teachers import build_teacher, label_set

    report = CycleReport()
    current = champion(warehouse)
    teacher = build_teacher(settings, warehouse)
    if teacher is None:
        report.relabel = {"teacher_id": "human", "queued": queue_unlabeled_for_humans(warehouse)}
    else:
        with progress("relabeling", None) as advance:
            done: RelabelReport = relabel(
                warehouse, teacher, batch_size=settings.teacher.batch_size,
                review_below=settings.teacher.review_below, on_batch=advance,
            )  # fmt: skip
        report.relabel = done.to_dict()
    labels = label_set(settings, warehouse)  # teacher.labels, else the champion's
    if current is not None and sorted(labels) != sorted(current.label_set):
        raise LabelSetMismatchError(
            f"the configured label set ({len(labels)} labels) differs from champion "
            f"{current.version}'s ({len(current.label_set)} labels); set teacher.labels to the "
            "champion's labels, or train a new student with `trainer bootstrap`"
        )
    spec = DatasetSpec.from_settings(
        settings, sorted(labels), previous=current.dataset_hash if current else None
    )
    dataset = build_dataset(warehouse, spec, settings.datasets_dir)
    report.dataset_counts = dataset.counts
    warm = current if settings.trainer.warm_start else None
    return train_and_register(
        settings, warehouse, dataset, warm_from=warm, progress=progress, report=report
    )
