"""How often people agree with each teacher, measured on the spot-check sample only.

Spot-check items are drawn by case-id hash whatever the teacher answered
(:func:`tutorloop.labeling.relabel.spot_checked`), so the share of them a reviewer labels the
way a teacher did estimates that teacher's accuracy on captured traffic without bias.
Disagreement and low-confidence items do not count: they went to review because an answer
looked doubtful, and would make every teacher look worse than it is. Every teacher that
labeled a spot-checked case is measured on it, whichever one put it in the queue.

Per label means per label *the teacher gave*: what a reviewer found when the teacher said X,
which is what a teacher label is worth when it arrives.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tutorloop.evaluation.intervals import Interval, wilson
from tutorloop.infra.tables import ReviewReason
from tutorloop.infra.warehouse import Warehouse

__all__ = ["Agreement", "spot_check_agreement", "teacher_weights"]


@dataclass(frozen=True)
class Agreement:
    """Spot checks of one teacher (all its labels, or one label it gave) and how many held."""

    teacher_id: str
    label: str | None  # None: every label of the teacher
    checked: int
    agreed: int

    def interval(self, confidence: float = 0.95) -> Interval:
        """The agreement rate with its Wilson interval."""
        return wilson(self.agreed, self.checked, confidence=confidence)

    def to_dict(self) -> dict[str, Any]:
        """The counts, the rate with its interval and the weight, as plain values."""
        ci = self.interval()
        return {"teacher_id": self.teacher_id, "label": self.label, "checked": self.checked,
                "agreed": self.agreed, "rate": ci.value, "lower": ci.lower, "upper": ci.upper,
                "weight": self.weight}  # fmt: skip

    @property
    def weight(self) -> float:
        """Posterior mean agreement under a uniform prior: (agreed + 1) / (checked + 2).

        An unchecked teacher weighs 0.5; a few checks move it only a little.
        """
        return (self.agreed + 1) / (self.checked + 2)


def _checked_pairs(warehouse: Warehouse) -> dict[tuple[str, str], tuple[str, str]]:
    """(case, teacher) -> (teacher's label, reviewer's label), latest resolution per case."""
    rows = warehouse.query(
        "SELECT r.case_id, l.teacher_id, l.label, r.resolved_label FROM review_queue r"
        " JOIN labels l ON l.case_id = r.case_id AND l.source = 'teacher'"
        " WHERE r.reason = ? AND r.status = 'resolved' AND r.resolved_label IS NOT NULL"
        " ORDER BY r.resolved_at, r.item_id",
        [str(ReviewReason.SPOT_CHECK)],
    )
    return {(case_id, teacher): (given, human) for case_id, teacher, given, human in rows}


def spot_check_agreement(warehouse: Warehouse) -> list[Agreement]:
    """Per teacher (``label`` None), then per teacher and label it gave; teachers by id,
    labels from the least agreed-with."""
    overall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_label: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (_, teacher), (given, human) in _checked_pairs(warehouse).items():
        for counts in (overall[teacher], per_label[teacher, given]):
            counts[0] += 1
            counts[1] += given == human
    out = [Agreement(t, None, n, k) for t, (n, k) in sorted(overall.items())]
    by_label = [Agreement(t, label, n, k) for (t, label), (n, k) in per_label.items()]
    by_label.sort(key=lambda a: (a.teacher_id, a.agreed / a.checked, -a.checked, a.label or ""))
    return out + by_label


def teacher_weights(warehouse: Warehouse) -> dict[str, float]:
    """Each spot-checked teacher's weight (:attr:`Agreement.weight`); others are absent."""
    return {a.teacher_id: a.weight for a in spot_check_agreement(warehouse) if a.label is None}
