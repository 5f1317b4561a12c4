"""The types a dataset is built from: its spec, its rows, the labeled cases it draws on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import stable_unit
from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import LabelSource, Split

SPLITS = tuple(Split)
_FORMAT = 1


class EmptyDatasetError(TutorloopError):
    """Nothing could go into the training split."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that decides a dataset's content (and so its hash) besides the data."""

    labels: tuple[str, ...]
    human_weight: float = 0.3
    replay_fraction: float = 10.0
    validation_fraction: float = 0.1
    eval_fraction: float = 0.2
    min_teacher_confidence: float = 0.0
    teacher_id: str | None = None
    previous: str | None = None
    caps_per_user: int = 50
    caps_per_tenant: int = 0
    caps_window_days: float = 7.0
    seed: int = 0
    oos_label: str = ""
    eval_min_per_label: int = 5
    eval_min_oos: int = 30

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        labels: Sequence[str],
        *,
        teacher_id: str | None = None,
        previous: str | None = None,
    ) -> DatasetSpec:
        from tutorloop.registry.contract import load_contract

        d, p = settings.dataset, settings.privacy
        ev = load_contract(settings)
        return cls(
            labels=tuple(labels),
            human_weight=d.human_weight,
            replay_fraction=d.replay_fraction,
            validation_fraction=d.validation_fraction,
            eval_fraction=d.eval_fraction,
            min_teacher_confidence=d.min_teacher_confidence,
            teacher_id=teacher_id,
            previous=previous,
            caps_per_user=p.max_cases_per_user,
            caps_per_tenant=p.max_cases_per_tenant,
            caps_window_days=p.cap_window_days,
            oos_label=ev.task.oos_label,
            eval_min_per_label=ev.evaluation.min_rows_per_label,
            eval_min_oos=ev.evaluation.min_oos_rows,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["format"] = _FORMAT
        return data


@dataclass(frozen=True)
class Row:
    case_id: str
    text: str
    label: str
    soft_targets: tuple[float, ...]
    source: str  # human | teacher | human+teacher
    split: str
    replay: bool = False
    # Derived from a production user (captured, escalated): DP-SGD spends epsilon on it.
    # Rows the operator imported (PUBLIC_REASONS) are public.
    private: bool = False

    @classmethod
    def gold(cls, case_id: str, text: str, label: str, labels: Sequence[str]) -> Row:
        """An evaluation row: the human label, one-hot."""
        one_hot = tuple(1.0 if label == x else 0.0 for x in labels)
        return cls(case_id, text, label, one_hot, LabelSource.HUMAN, Split.EVAL)


@dataclass
class DatasetVersion:
    """A built dataset: where it is, its hash, and what it holds."""

    dataset_hash: str
    path: Path
    spec: DatasetSpec
    counts: dict[str, Any]
    created: bool = True
    rows: list[Row] = field(default_factory=list, repr=False)

    def n(self, split: str) -> int:
        return int(self.counts["by_split"].get(split, 0))


def unit(seed: int, case_id: str) -> float:
    """A uniform number in [0, 1) from a case id: stable across runs and machines."""
    return stable_unit(f"{seed}\0{case_id}")


@dataclass(frozen=True)
class Candidate:
    case_id: str
    text: str
    text_hash: str
    human: str | None
    teacher: str | None
    teacher_soft: dict[str, float] | None
    teacher_confidence: float | None
    capture_reason: str
    # Synthetic cases: the captured case they were written from, and the label asked for.
    source_case_id: str | None = None
    intended_label: str | None = None
