"""The rows of a version's dataset that its export fits on and its gates judge it on.

A DP-trained version (its card has a ``privacy`` section) is fitted and judged on public rows
only: the imported ones, none derived from production users (``infra.tables.PUBLIC_REASONS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tutorloop.infra.hashing import eval_set_digest
from tutorloop.infra.tables import PUBLIC_REASONS
from tutorloop.infra.warehouse import Warehouse

__all__ = ["EvaluationSet", "evaluation_set", "split_rows", "trained_with_dp"]


@dataclass(frozen=True)
class EvaluationSet:
    """The rows gates judge a version on, and which rows they are (``digest``)."""

    texts: list[str]
    truth: list[str]
    split: str  # eval, or validation when the dataset has no gold evaluation rows
    digest: str  # the evaluation set's version (:func:`infra.hashing.eval_set_digest`)
    case_ids: tuple[str, ...] = ()

    @property
    def gold(self) -> bool:
        return self.split == "eval" and bool(self.texts)


def trained_with_dp(card: dict[str, Any]) -> bool:
    """Whether a version's card says it was trained with DP-SGD (its private rows noised)."""
    return bool(card.get("privacy"))


def split_rows(
    warehouse: Warehouse, dataset_hash: str | None, split: str, *, public_only: bool = False
) -> list[tuple[str, str, str]]:
    """(case_id, text, label) of one split of a dataset version, in case-id order;
    ``public_only``: the imported rows only, none derived from production users."""
    if not dataset_hash:
        return []
    public = ""
    if public_only:
        public = f" AND c.capture_reason IN ({', '.join('?' for _ in PUBLIC_REASONS)})"
    return [
        (str(c), str(t), str(label))
        for c, t, label in warehouse.query(
            "SELECT m.case_id, c.text, m.label FROM dataset_members m JOIN cases c"
            " USING (case_id) WHERE m.dataset_hash = ? AND m.split = ?"
            + public
            + " ORDER BY m.case_id",
            [dataset_hash, split, *(PUBLIC_REASONS if public_only else ())],
        )
    ]


def evaluation_set(
    warehouse: Warehouse, dataset_hash: str | None, *, public_only: bool = False
) -> EvaluationSet:
    """The gold evaluation rows of a dataset version (its validation rows if it has none:
    enough for parity, which needs no truth, but not evidence of quality)."""
    for split in ("eval", "validation"):
        rows = split_rows(warehouse, dataset_hash, split, public_only=public_only)
        if rows:
            return EvaluationSet(
                [t for _, t, _ in rows], [label for _, _, label in rows], split,
                eval_set_digest((c, label) for c, _, label in rows),
                tuple(c for c, _, _ in rows),
            )  # fmt: skip
    return EvaluationSet([], [], "eval", "")
