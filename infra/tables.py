"""The warehouse contract: every table's columns and owner, and the stored vocabularies.

- **One owner per table.** Only the owning package writes a table (``INSERT``, ``UPDATE``,
  ``DELETE``); others read through the owner's functions. Erasure (``privacy.erasure``) is the
  documented exception: it must reach every copy of a subject's data, whoever wrote it.
  ``tests/test_architecture.py`` checks both this list against the migrated schema and every
  write statement in the code against its table's owner.
- **Stored vocabularies** (capture reasons, label sources, splits, model statuses, promotion
  actions, review reasons) are string enums: they compare equal to, and are stored as, their
  values, so the warehouse holds plain strings that SQL and other languages read without this
  package.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CaptureReason(StrEnum):
    """``cases.capture_reason`` / ``predictions_audit.capture_reason``."""

    LOW_CONFIDENCE = "low_confidence"
    LOW_MARGIN = "low_margin"
    WATCHED_LABEL = "watched_label"
    AUDIT_SAMPLE = "audit_sample"
    ESCALATED = "escalated"
    GOLD_IMPORT = "gold_import"  # labeled rows an operator imported (seed, reviewed data)
    PRIVATE_IMPORT = "private_import"  # imported, but derived from users: private under DP
    GOLD_EVAL = "gold_eval"  # the fixed gold evaluation set: never trained on


# Imported rows are labeled already: never sent to a teacher, never counted as captured.
IMPORTED_REASONS = (
    CaptureReason.GOLD_IMPORT, CaptureReason.PRIVATE_IMPORT, CaptureReason.GOLD_EVAL
)  # fmt: skip
# Imported for training (never held out for evaluation).
TRAINING_IMPORTS = (CaptureReason.GOLD_IMPORT, CaptureReason.PRIVATE_IMPORT)
# Public for differential privacy: what the operator imported (a seed or evaluation set) and
# did not mark private. DP-SGD spends epsilon on every other row only.
PUBLIC_REASONS = (CaptureReason.GOLD_IMPORT, CaptureReason.GOLD_EVAL)


class LabelSource(StrEnum):
    """``labels.source``."""

    TEACHER = "teacher"
    HUMAN = "human"


class Split(StrEnum):
    """``dataset_members.split``."""

    TRAIN = "train"
    VALIDATION = "validation"
    EVAL = "eval"


class ModelStatus(StrEnum):
    """``model_versions.status``."""

    CANDIDATE = "candidate"
    REJECTED = "rejected"
    CHAMPION = "champion"
    RETIRED = "retired"


class PromotionAction(StrEnum):
    """``promotions.action``."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"


class GateVerdict(StrEnum):
    """``gate_results.verdict``: insufficient means too few rows to decide."""

    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient"


class ReviewReason(StrEnum):
    """``review_queue.reason``."""

    DISAGREEMENT = "disagreement"
    LOW_CONFIDENCE = "low_confidence"
    NEEDS_LABEL = "needs_label"


@dataclass(frozen=True)
class Table:
    name: str
    owner: str  # the package (under ``tutorloop.``) that writes it
    columns: tuple[str, ...]
    holds: str


TABLES: tuple[Table, ...] = (
    Table(
        "cases",
        "labeling",
        (
            "case_id",
            "request_id",
            "prediction_event_id",
            "ts",
            "tenant_id",
            "user_id",
            "model_version",
            "text",
            "text_hash",
            "predicted_label",
            "confidence",
            "capture_reason",
            "consent_training",
            "scrub_findings",
            "scrub_policy_version",
            "captured_at",
        ),
        "captured or imported cases: scrubbed text only (capture writes via labeling)",
    ),
    Table(
        "dataset_members",
        "trainer",
        ("dataset_hash", "case_id", "split", "label", "label_source"),
        "which case is in which split of which dataset",
    ),
    Table(
        "dataset_versions",
        "trainer",
        (
            "dataset_hash",
            "created_at",
            "spec",
            "counts",
            "n_train",
            "n_validation",
            "n_eval",
            "path",
        ),
        "dataset versions by content hash",
    ),
    Table(
        "erasures",
        "privacy",
        (
            "erasure_id",
            "ts",
            "user_id",
            "actor",
            "cases_deleted",
            "labels_deleted",
            "dataset_versions",
            "model_versions",
            "broker_expires_at",
        ),
        "erasure records (subject by hash)",
    ),
    Table(
        "escalations",
        "streams",
        (
            "event_id",
            "ts",
            "request_id",
            "reason",
            "human_label",
            "actor",
            "ingested_at",
            "case_id",
            "kafka_partition",
            "kafka_offset",
        ),
        "escalation events, joined to cases by request id (the stream sink)",
    ),
    Table(
        "parked_escalations",
        "streams",
        (
            "prediction_event_id",
            "request_id",
            "kafka_partition",
            "kafka_offset",
            "parked_at",
            "attempts",
            "next_retry_at",
            "status",
        ),
        "escalated predictions not yet read back from Kafka, retried (no text, no user id)",
    ),
    Table(
        "gate_results",
        "registry",
        (
            "version",
            "gate",
            "value",
            "threshold",
            "comparator",
            "passed",
            "detail",
            "evaluated_at",
            "n",
            "ci_lower",
            "ci_upper",
            "clause",
            "verdict",
            "contract_hash",
            "eval_hash",
        ),
        "each gate's value, threshold and verdict per version",
    ),
    Table(
        "labels",
        "labeling",
        (
            "label_id",
            "case_id",
            "source",
            "label",
            "soft_targets",
            "confidence",
            "teacher_id",
            "teacher_version",
            "actor",
            "rationale",
            "cost_usd",
            "tokens",
            "created_at",
        ),
        "teacher, human and gold labels of cases",
    ),
    Table(
        "model_versions",
        "registry",
        ("version", "created_at", "run_id", "status", "artifact_dir", "label_set", "card"),
        "registered versions and their status",
    ),
    Table(
        "predictions_audit",
        "streams",
        (
            "event_id",
            "ts",
            "tenant_id",
            "user_id",
            "request_id",
            "model_version",
            "label",
            "confidence",
            "margin",
            "consent_training",
            "captured",
            "capture_reason",
            "policy_version",
            "ingested_at",
            "kafka_partition",
            "kafka_offset",
        ),
        "every prediction, no text (the stream sink)",
    ),
    Table(
        "privacy_ledger",
        "privacy",
        (
            "run_id",
            "ts",
            "window_start",
            "window_end",
            "epsilon",
            "delta",
            "noise_multiplier",
            "sample_rate",
            "steps",
            "max_grad_norm",
            "accountant",
            "rows_per_user",
            "user_epsilon",
            "user_delta",
            "public_rows",
            "private_rows",
            "replayed_private_rows",
        ),
        "DP-SGD spend per run",
    ),
    Table(
        "promotions",
        "registry",
        (
            "promotion_id",
            "ts",
            "action",
            "from_version",
            "to_version",
            "actor",
            "reason",
            "forced",
            "contract_hash",
        ),
        "promote and rollback history",
    ),
    Table(
        "review_queue",
        "labeling",
        (
            "item_id",
            "case_id",
            "reason",
            "teacher_label",
            "teacher_confidence",
            "human_label",
            "status",
            "resolved_label",
            "resolved_by",
            "created_at",
            "resolved_at",
        ),
        "cases waiting for a person",
    ),
    Table(
        "schedule_runs",
        "loop",
        (
            "window_id",
            "trigger",
            "claimed_at",
            "finished_at",
            "status",
            "host",
            "pid",
            "version",
            "error",
        ),
        "claimed retrain windows",
    ),
    Table(
        "schema_version",
        "infra",
        ("version", "description", "applied_at"),
        "applied migrations",
    ),
    Table(
        "teacher_cache",
        "labeling",
        (
            "teacher_id",
            "text_hash",
            "teacher_version",
            "label",
            "soft_targets",
            "confidence",
            "rationale",
            "cost_usd",
            "tokens",
            "created_at",
        ),
        "a teacher's answer per (teacher, text hash): no text",
    ),
    Table(
        "teacher_errors",
        "labeling",
        ("error_id", "case_id", "teacher_id", "kind", "message", "cost_usd", "tokens", "ts"),
        "failed teacher answers per case and attempt",
    ),
    Table(
        "training_runs",
        "trainer",
        (
            "run_id",
            "started_at",
            "finished_at",
            "status",
            "dataset_hash",
            "base_model",
            "quantization",
            "fallback_reason",
            "config",
            "seed",
            "package_versions",
            "git_commit",
            "hardware",
            "metrics",
            "error",
        ),
        "what each training run was given and where it ran",
    ),
)

BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

# The one package allowed to write every table: erasure must reach all copies.
ERASURE_MODULE = "tutorloop.privacy.erasure"
