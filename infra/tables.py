"""The warehouse's stored vocabularies (each table's owner and columns: ``infra.table_owners``).

- **Stored vocabularies** (capture reasons, label sources, splits, model statuses, promotion
  actions, review reasons) are string enums: they compare equal to, and are stored as, their
  values, so the warehouse holds plain strings that SQL and other languages read without this
  package.
"""

from __future__ import annotations

from enum import StrEnum

# The tenant of a request that names none (serving's default); erasure is scoped to it unless
# told otherwise.
DEFAULT_TENANT = "default"


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
    # Written by an LLM teacher from a captured case's scrubbed text (a paraphrase or a
    # contrast edit; lineage in ``synthetic_cases``): trained on, never evaluated on.
    SYNTHETIC = "synthetic"


# Imported rows are labeled already: never sent to a teacher, never counted as captured.
IMPORTED_REASONS = (
    CaptureReason.GOLD_IMPORT, CaptureReason.PRIVATE_IMPORT, CaptureReason.GOLD_EVAL
)  # fmt: skip
# Imported for training (never held out for evaluation).
TRAINING_IMPORTS = (CaptureReason.GOLD_IMPORT, CaptureReason.PRIVATE_IMPORT)
# Never held out for evaluation, whatever label they get: imported for training, or synthetic.
TRAIN_ONLY = (*TRAINING_IMPORTS, CaptureReason.SYNTHETIC)
# Public for differential privacy: what the operator imported (a seed or evaluation set) and
# did not mark private. DP-SGD spends epsilon on every other row only.
PUBLIC_REASONS = (CaptureReason.GOLD_IMPORT, CaptureReason.GOLD_EVAL)


class SyntheticKind(StrEnum):
    """``synthetic_cases.kind``."""

    PARAPHRASE = "paraphrase"  # the source's meaning (and label), other words
    CONTRAST = "contrast"  # a minimal edit of the source that flips its label


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
    # A shadow or canary rollout ended without a new champion (``from_version`` is the
    # challenger, ``to_version`` the champion that keeps serving).
    ROLLOUT_ROLLBACK = "rollout_rollback"  # by the contract's live thresholds
    ROLLOUT_ABORT = "rollout_abort"  # by command


# The actions that change the champion (a rollback's default target is found among them).
CHAMPION_CHANGES = (PromotionAction.PROMOTE, PromotionAction.ROLLBACK)


class RolloutOutcome(StrEnum):
    """``rollouts.outcome``."""

    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


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
    # A seeded sample of teacher labels, drawn regardless of confidence: what people decide
    # on these (and only these) estimates each teacher's agreement without bias.
    SPOT_CHECK = "spot_check"
