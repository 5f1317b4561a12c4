"""What the demo is asked to do and what it found: shared by the run and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tutorloop.demo.holdout import OpenSetResult


@dataclass
class DemoOptions:
    data: Path
    test: Path
    out: Path
    text_col: str = "text"
    label_col: str | None = None
    cycles: int = 2
    seed_per_label: int = 10
    eval_per_label: int = 5
    pool: int = 3000
    traffic: int | None = None  # default: every row left
    escalate: float = 0.03
    dp_epsilon: float | None = None
    quick: bool = False
    seed: int = 0
    holdout_intents: float = 0.0  # share of intents left out of every stage, OOS in the test


@dataclass
class CycleRow:
    cycle: int
    champion: str
    candidate: str | None
    promoted: bool
    accuracy: float
    macro_f1: float
    ece: float
    aurc: float
    selective_accuracy: float
    p95_ms: float | None
    labels_human: int
    labels_teacher: int
    labels_total: int
    labels_acquired: int  # cumulative: every case with a label outside the gold eval set
    teacher_calls: int  # cumulative, like captured and served
    epsilon: float
    captured: int
    served: int
    note: str = ""
    open_set: OpenSetResult | None = None  # with --holdout-intents
    accuracy_without_memory: float | None = None  # the champion without its retrieval memory


@dataclass
class DemoResult:
    rows: list[CycleRow] = field(default_factory=list)
    teacher_accuracy: float = 0.0
    seed_accuracy: float = 0.0
    gap_closed: float | None = None
    report: Path | None = None
    seconds: float = 0.0
    probs: Any = None
    targets: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)  # serving's drift windows
    unknown_intents: list[str] = field(default_factory=list)  # with --holdout-intents
    spot_checks: list[dict[str, Any]] = field(default_factory=list)  # agreement rows
    spot_checks_resolved: int = 0
