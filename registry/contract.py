"""The model contract: what a student must do before it may serve, in one versioned file.

The playbook's first step is to state the task's boundaries and failure modes before any
training. ``contract.toml`` (``registry.contract``, default ``<data_dir>/contract.toml``) says
it: the label set and the out-of-scope label, quality floors, serving constraints, privacy
requirements, the fallback policy, the regression allowed against the champion, int8 parity,
the expected gap to the teacher, and how evaluation rows are sampled and judged. Every gate is
derived from a clause of it; gate results, the model card and every promotion record the
contract's hash, so lineage can say which contract a model was judged under.

With no file, the contract is built from the ``[registry]`` settings (their defaults on a
fresh machine): ``tutorloop contract init`` writes exactly that contract, commented, with the
data's labels filled in. Once the file exists it is the only source of the gates' thresholds.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.hashing import JsonDigest
from tutorloop.infra.settings import Settings

FORMAT = 1


class ContractError(TutorloopError):
    """The contract file is missing a value, has a wrong one, or cannot be read."""


class _Clause(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TaskClause(_Clause):
    labels: list[str] = Field(default_factory=list, description="empty: the model's own labels")
    oos_label: str = ""


class QualityClause(_Clause):
    min_accuracy: float = Field(default=0.5, ge=0, le=1)
    min_macro_f1: float = Field(default=0.4, ge=0, le=1)
    max_ece: float = Field(default=0.15, ge=0, le=1)
    selective_coverage: float = Field(default=0.8, gt=0, le=1)
    min_selective_accuracy: float = Field(default=0.6, ge=0, le=1)
    max_aurc: float = Field(default=0.3, ge=0, le=1)
    min_oos_recall: float = Field(default=0.5, ge=0, le=1)
    min_oos_precision: float = Field(default=0.5, ge=0, le=1)


class ServingClause(_Clause):
    max_p95_latency_ms: float = Field(default=20.0, gt=0)
    max_rss_mb: float = Field(default=1024.0, gt=0)
    max_artifact_mb: float = Field(default=50.0, gt=0)
    max_cost_per_1k_requests: float = Field(default=0.01, gt=0, description="USD, CPU time")
    cpu_hour_usd: float = Field(default=0.05, gt=0, description="price of one core-hour")


class PrivacyClause(_Clause):
    scrubber_required: bool = True
    consent_required: bool = True
    max_user_epsilon: float | None = Field(default=None, gt=0, description="unset: DP optional")


class FallbackClause(_Clause):
    abstain_below: float = Field(default=0.5, ge=0, le=1)
    open_set: bool = Field(
        default=False, description="also abstain on inputs the open-set scorer calls unknown"
    )
    open_set_max_accuracy_drop: float = Field(
        default=0.02, ge=0, le=1,
        description="its threshold: validation accuracy it may cost (abstentions count wrong)",
    )  # fmt: skip
    route_to: Literal["teacher", "human", "none"] = "teacher"


class ChampionClause(_Clause):
    max_accuracy_regression: float = Field(default=0.01, ge=0, le=1)
    max_macro_f1_regression: float = Field(default=0.01, ge=0, le=1)
    max_hard_cases_regression: float = Field(default=0.02, ge=0, le=1)
    hard_cases_days: float = Field(default=14.0, gt=0)


class ParityClause(_Clause):
    min_agreement: float = Field(default=0.995, ge=0, le=1)
    tie_margin: float = Field(default=0.05, ge=0, lt=1)
    max_accuracy_drop: float = Field(default=0.005, ge=0, le=1)


class TeacherClause(_Clause):
    expected_gap: float = Field(default=0.05, ge=0, le=1, description="teacher minus student")


class EvaluationClause(_Clause):
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_rows: int = Field(default=30, ge=1, description="below: a quality gate is insufficient")
    min_oos_rows: int = Field(default=30, ge=1)
    min_rows_per_label: int = Field(default=5, ge=0)
    min_comparison_rows: int = Field(default=30, ge=1)
    on_insufficient: Literal["warn", "block"] = Field(
        default="warn",
        description="quality floors and champion comparisons; serving and parity always block",
    )


class LiveClause(_Clause):
    """How a shadow or canary version must behave on live traffic, judged per window."""

    min_requests: int = Field(default=50, ge=1, description="fewer in a window: not judged")
    min_agreement: float = Field(default=0.8, ge=0, le=1, description="top-1 vs the champion")
    max_abstention_increase: float = Field(default=0.1, ge=0, le=1)
    max_confidence_drop: float = Field(default=0.1, ge=0, le=1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)


class Contract(_Clause):
    format: int = FORMAT
    version: str = Field(default="1", min_length=1, description="bump on every change")
    task: TaskClause = Field(default_factory=TaskClause)
    quality: QualityClause = Field(default_factory=QualityClause)
    serving: ServingClause = Field(default_factory=ServingClause)
    privacy: PrivacyClause = Field(default_factory=PrivacyClause)
    fallback: FallbackClause = Field(default_factory=FallbackClause)
    champion: ChampionClause = Field(default_factory=ChampionClause)
    parity: ParityClause = Field(default_factory=ParityClause)
    teacher: TeacherClause = Field(default_factory=TeacherClause)
    evaluation: EvaluationClause = Field(default_factory=EvaluationClause)
    live: LiveClause = Field(default_factory=LiveClause)
    source: str = Field(default="", exclude=True)  # where it was read from (not hashed)

    @model_validator(mode="after")
    def _oos_in_labels(self) -> Contract:
        t = self.task
        if t.labels and len(set(t.labels)) != len(t.labels):
            raise ValueError("task.labels has duplicates")
        if t.oos_label and t.labels and t.oos_label not in t.labels:
            raise ValueError(f"task.oos_label {t.oos_label!r} is not in task.labels")
        return self

    @property
    def digest(self) -> str:
        """sha256 of the contract's values (comments and layout do not change it)."""
        return JsonDigest().add(self.model_dump(mode="json")).hexdigest()

    @property
    def ref(self) -> str:
        """How reports cite it: version and short hash."""
        return f"contract v{self.version} ({self.digest[:12]})"


def contract_path(settings: Settings) -> Path:
    return settings.registry.contract or settings.data_dir / "contract.toml"


def default_contract(
    settings: Settings, labels: Sequence[str] = (), *, oos_label: str | None = None
) -> Contract:
    """The contract the ``[registry]`` and ``[serving]`` settings imply (``oos_label``
    overrides ``registry.oos_label``). Raises pydantic's ValidationError when they disagree
    with ``labels``."""
    r = settings.registry
    oos = r.oos_label if oos_label is None else oos_label
    return Contract(
        task=TaskClause(labels=list(labels), oos_label=oos),
        quality=QualityClause(
            min_accuracy=r.min_accuracy, min_macro_f1=r.min_macro_f1, max_ece=r.max_ece,
            selective_coverage=r.selective_coverage,
            min_selective_accuracy=r.min_selective_accuracy, max_aurc=r.max_aurc,
            min_oos_recall=r.min_oos_recall,
        ),
        serving=ServingClause(
            max_p95_latency_ms=r.max_p95_latency_ms, max_rss_mb=r.max_rss_mb,
            max_artifact_mb=r.max_artifact_mb,
        ),
        privacy=PrivacyClause(max_user_epsilon=None),
        fallback=FallbackClause(
            abstain_below=settings.serving.abstain_below, open_set=settings.serving.open_set,
            open_set_max_accuracy_drop=settings.serving.open_set_max_accuracy_drop,
        ),
        champion=ChampionClause(
            max_accuracy_regression=r.regression_tolerance,
            max_macro_f1_regression=r.regression_tolerance,
            max_hard_cases_regression=r.hard_cases_tolerance, hard_cases_days=r.hard_cases_days,
        ),
        parity=ParityClause(min_agreement=r.min_parity, tie_margin=r.parity_tie_margin),
        source="built-in defaults ([registry] settings; no contract file)",
    )  # fmt: skip


def load_contract(settings: Settings) -> Contract:
    """The contract file if there is one, else :func:`default_contract`."""
    path = contract_path(settings)
    if not path.exists():
        return default_contract(settings)
    return read_contract(path)


def read_contract(path: Path) -> Contract:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc}") from None
    try:
        contract = Contract.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ContractError(f"{path}: {where}: {first['msg']}") from None
    if contract.format != FORMAT:
        raise ContractError(f"{path}: format {contract.format} is not {FORMAT}")
    return contract.model_copy(update={"source": str(path)})
