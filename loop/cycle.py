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
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Sequence, Value, load_from_disk

from tutorloop.infra.errors import TutorloopError, stored_error
from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import Split
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.gold import import_gold
from tutorloop.labeling.labeled_csv import LabeledRows
from tutorloop.labeling.models import resolve_model
from tutorloop.labeling.teachers import label_set
from tutorloop.loop.dp_sample import DPSample, dp_sample
from tutorloop.loop.progress import ProgressFactory, no_progress
from tutorloop.loop.teach import teach
from tutorloop.privacy.dp import at_user_level, check_budget, record_entry
from tutorloop.privacy.dp_plan import dp_card, dp_plan_of, private_rows
from tutorloop.privacy.scrubbing import configured_scrubber
from tutorloop.registry.erasure_marks import clean_warm_start
from tutorloop.registry.lifecycle import evaluate_candidate
from tutorloop.registry.store import ModelVersion, champion, register_candidate, verify
from tutorloop.trainer.dataset import DatasetSpec, DatasetVersion
from tutorloop.trainer.dataset_store import build_dataset, data_window
from tutorloop.trainer.label_filter import filter_teacher_labels
from tutorloop.trainer.representation import representation_targets
from tutorloop.trainer.runs import finish_run, package_versions, start_run
from tutorloop.trainer.student import load_student, resolve_training_path, save_student
from tutorloop.trainer.train import DPRequest, train_student

log = logging.getLogger(__name__)


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
    dp_plan: dict[str, Any] | None = None  # DP runs: noise, steps and signal, before training
    dp_users_left_out: int = 0  # DP runs: users the run would have taken past their lifetime
    warm_start_passed_over: list[str] = field(default_factory=list)  # marked by an erasure
    seconds: float = 0.0
    gates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


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


def _head_labels(dataset: DatasetVersion, warm_from: ModelVersion | None) -> list[str]:
    """The student head's label order: the champion's when warm-starting, else the dataset's."""
    labels = list(dataset.spec.labels)
    if warm_from is None:
        return labels
    if sorted(warm_from.label_set) != sorted(labels):
        raise LabelSetMismatchError(
            f"the dataset's label set ({len(labels)} labels) differs from champion "
            f"{warm_from.version}'s ({len(warm_from.label_set)} labels)"
        )
    verify(warm_from.artifact_dir)
    return list(warm_from.label_set)


def _start_run(
    settings: Settings,
    warehouse: Warehouse,
    dataset: DatasetVersion,
    warm_from: ModelVersion | None,
    epochs: int,
    sample: DPSample | None,
) -> tuple[str, tuple[datetime | None, datetime | None]]:
    """Check the DP budget for the dataset's data window, then record the run as started."""

    cfg, privacy = settings.trainer, settings.privacy
    window = data_window(warehouse, dataset.dataset_hash)
    # Epsilon is spent on private rows only: a run on public (imported) rows asks for none.
    if (
        privacy.dp_epsilon is not None and private_rows(dataset.counts)
        and window[0] is not None and window[1] is not None
    ):  # fmt: skip
        check_budget(
            warehouse, privacy.dp_epsilon, budget=privacy.epsilon_budget,
            window_start=window[0], window_end=window[1],
            rows_per_user=sample.rows_per_user if sample else 1,
            budget_window_days=privacy.budget_window_days,
        )  # fmt: skip
    path = resolve_training_path(cfg.quantization)
    config: dict[str, Any] = {
        "trainer": cfg.model_dump(), "dataset": dataset.spec.to_dict(), "epochs": epochs,
        "training_path": {"requested": path.requested, "chosen": path.quantization,
                          "reason": path.reason, "fast_4bit_kernel": path.fast_kernel},
        "privacy": privacy.model_dump() if privacy.dp_epsilon is not None else None,
        "warm_start_from": warm_from.version if warm_from else None,
    }  # fmt: skip
    run_id = start_run(
        warehouse, dataset_hash=dataset.dataset_hash, base_model=str(cfg.base_model),
        quantization=path.quantization, config=config, seed=cfg.seed,
    )  # fmt: skip
    return run_id, window


def _card(
    settings: Settings,
    dataset: DatasetVersion,
    student: Any,
    outcome: Any,
    metrics: dict[str, Any],
    warm_from: ModelVersion | None,
    base_folder: Path,
) -> dict[str, Any]:

    cfg = settings.trainer
    return {
        "kind": "student",
        "dataset_hash": dataset.dataset_hash,
        "base_model": str(cfg.base_model),
        "base_model_path": str(base_folder),
        "quantization": student.quantization,
        "quantization_requested": student.path.requested,
        "quantization_reason": student.path.reason,
        "fallback_reason": student.fallback_reason,
        "hyperparameters": cfg.model_dump(),
        "seed": cfg.seed,
        "temperature": outcome.temperature,
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
        "warm_start_from": warm_from.version if warm_from else None,
        "package_versions": package_versions(),
    }


def _train_and_stage(
    settings: Settings,
    warehouse: Warehouse,
    dataset: DatasetVersion,
    labels: list[str],
    warm_from: ModelVersion | None,
    run: tuple[str, tuple[datetime | None, datetime | None]],
    base_folder: Path,
    *,
    epochs: int,
    progress: ProgressFactory,
    report: CycleReport,
    sample: tuple[DPSample | None, frozenset[str]],
) -> tuple[Any, Any, dict[str, Any]]:
    """Train the student into the run's staging folder; the ledger gets a DP run's spend (and
    the rows of each user it sampled)."""

    cfg = settings.trainer
    run_id, window = run
    student = load_student(
        base_folder, labels, cfg,
        init_adapter=warm_from.artifact_dir / "adapter" if warm_from else None,
    )  # fmt: skip
    report.quantization, report.fallback_reason = student.quantization, student.fallback_reason
    rows = load_from_disk(str(dataset.path))
    if warm_from is not None and rows.features["label"].names != labels:
        # Re-index the dataset's labels to the champion's head order.
        rows = _reorder_labels(rows, labels)
    dp_users, left_out = sample
    if left_out:  # users this DP run would take past their lifetime ceiling
        rows = rows.filter(lambda row: row["case_id"] not in left_out)
    dp = DPRequest(settings.privacy, run_id) if settings.privacy.dp_epsilon is not None else None
    rows, label_filter = filter_teacher_labels(
        student, rows, cfg.label_filter, seed=cfg.seed, dp=dp is not None, max_length=cfg.max_length
    )
    n_train = sum(1 for s in rows["split"] if s == Split.TRAIN)
    representation = representation_targets(settings)
    with progress("training", -(-n_train // cfg.batch_size) * epochs) as advance:
        outcome = train_student(student, rows, cfg, dp=dp, on_step=advance, epochs=epochs,
                                representation=representation)  # fmt: skip
    if outcome.privacy is not None:
        public, replayed = _row_counts(rows)
        entry = replace(
            at_user_level(outcome.privacy, dp_users.rows_per_user if dp_users else 1),
            public_rows=public, replayed_private_rows=replayed,
        )  # fmt: skip
        sampled = dp_users.rows_by_user if dp_users else None
        start, end = window
        record_entry(warehouse, entry, window_start=start, window_end=end, user_rows=sampled)
    report.epsilon = outcome.epsilon
    save_student(student, settings.models_artifacts_dir / ".staging" / run_id, labels,
                 outcome.temperature)  # fmt: skip
    metrics = {
        **outcome.metrics, "steps": outcome.steps, "epochs_run": outcome.epochs_run,
        "stopped_early": outcome.stopped_early, "history": outcome.history,
        "epsilon": outcome.epsilon,
        "representation": representation.card() if representation is not None else None,
        "label_filter": label_filter.card() if label_filter is not None else None,
    }  # fmt: skip
    return student, outcome, metrics


def _row_counts(rows: Any) -> tuple[int, int]:
    """A dataset's public training rows, and the private rows it replays."""
    trained = [i for i, split in enumerate(rows["split"]) if split != Split.EVAL]
    private = rows["private"] if "private" in rows.column_names else [True] * len(rows)
    replay = rows["replay"]
    return (
        sum(1 for i in trained if not private[i]),
        sum(1 for i in trained if private[i] and replay[i]),
    )


def _gate(
    settings: Settings, warehouse: Warehouse, version: str, progress: ProgressFactory
) -> dict[str, Any]:
    """Export, quantize and gate the candidate; promote it under ``registry.auto_promote``."""

    with progress("export, quantize, gates", None) as advance:
        verdict = evaluate_candidate(
            warehouse, settings, version,
            promote_if_passed=settings.registry.auto_promote, actor="trainer",
        )  # fmt: skip
        advance(1)
    return {
        "passed": verdict.passed,
        "promoted": verdict.promoted,
        "rejected_reason": verdict.rejected_reason,
        "not_promoted_reason": verdict.not_promoted_reason,
        "failed": [g.gate for g in verdict.gates if not g.passed],
        "values": {g.gate: g.value for g in verdict.gates},
    }


def train_and_register(
    settings: Settings,
    warehouse: Warehouse,
    dataset: DatasetVersion,
    *,
    warm_from: ModelVersion | None,
    progress: ProgressFactory = no_progress,
    report: CycleReport | None = None,
    epochs: int | None = None,
    evaluate: bool = True,
) -> CycleReport:
    """Train on ``dataset`` (warm-started from ``warm_from``), register a candidate, then let
    the registry export, quantize and gate it (and promote it under ``auto_promote``)."""

    report = report or CycleReport()
    started = time.monotonic()
    labels = _head_labels(dataset, warm_from)
    base_folder = resolve_model(settings.trainer.base_model, settings.models_dir)
    epochs = epochs or settings.trainer.epochs
    sampled = dp_sample(settings, warehouse, dataset)
    sample, dropped = sampled if sampled else (None, frozenset[str]())
    counts = sample.counts(dataset.counts) if sample else dataset.counts
    report.dp_plan = dp_plan_of(settings.privacy, counts)  # a strict refusal: no run
    report.dp_users_left_out = len(sample.left_out) if sample else 0
    run = _start_run(settings, warehouse, dataset, warm_from, epochs, sample)
    run_id = run[0]
    report.run_id, report.dataset_hash = run_id, dataset.dataset_hash
    staged = settings.models_artifacts_dir / ".staging" / run_id
    try:
        student, outcome, metrics = _train_and_stage(
            settings, warehouse, dataset, labels, warm_from, run, base_folder,
            epochs=epochs, progress=progress, report=report, sample=(sample, dropped),
        )  # fmt: skip
        card = _card(settings, dataset, student, outcome, metrics, warm_from, base_folder)
        card["privacy"] = dp_card(settings.privacy, report.dp_plan, outcome.privacy)
        card["warm_start_passed_over"] = report.warm_start_passed_over
        if sample is not None and card["privacy"] is not None:
            card["privacy"]["lifetime"] = sample.card()
        version = register_candidate(
            warehouse, settings, staged, run_id=run_id, label_set=labels, card=card
        )
        finish_run(
            warehouse, run_id, metrics=metrics, quantization=student.quantization,
            fallback_reason=student.fallback_reason,
        )  # fmt: skip
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        finish_run(warehouse, run_id, error=stored_error(exc))
        raise
    report.version, report.metrics = version.version, metrics
    if evaluate and settings.registry.gate_after_training:
        report.gates = _gate(settings, warehouse, version.version, progress)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _reorder_labels(rows: Any, labels: list[str]) -> Any:

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
    progress: ProgressFactory = no_progress,
) -> CycleReport:
    """The first student: import a gold seed set, build its dataset, train from the base."""

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
    progress: ProgressFactory = no_progress,
) -> CycleReport:
    """relabel → dataset → train → register, with the configured teacher."""

    report = CycleReport()
    current = champion(warehouse)
    report.relabel = teach(settings, warehouse, progress)
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
    # Never from weights that saw an erased user's rows: the newest clean ancestor, or cold.
    warm, report.warm_start_passed_over = (
        clean_warm_start(warehouse, current) if settings.trainer.warm_start else (None, [])
    )
    return train_and_register(
        settings, warehouse, dataset, warm_from=warm, progress=progress, report=report
    )
