"""Resolving review items: a person's decision becomes a human (gold) label for the case."""

from __future__ import annotations

from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.warehouse import Warehouse


class ReviewItemError(TutorloopError):
    """The review item does not exist, is ambiguous, or is already resolved."""


def resolve(warehouse: Warehouse, item: str, label: str, actor: str) -> str:
    """Close ``item`` (an id or unique prefix) with ``label``; return the full item id."""
    with warehouse.transaction() as con:
        rows = con.execute(
            "SELECT item_id, case_id, status FROM review_queue WHERE starts_with(item_id, ?)",
            [item],
        ).fetchall()
        if not rows:
            raise ReviewItemError(f"no review item {item!r}")
        if len(rows) > 1:
            raise ReviewItemError(f"review item prefix {item!r} matches {len(rows)} items")
        item_id, case_id, status = rows[0]
        if status != "open":
            raise ReviewItemError(f"review item {item_id} is already resolved")
        con.execute(
            "UPDATE review_queue SET status = 'resolved', resolved_label = ?, resolved_by = ?,"
            " resolved_at = current_timestamp WHERE item_id = ?",
            [label, actor, item_id],
        )
        con.execute(
            "INSERT INTO labels (label_id, case_id, source, label, confidence, actor)"
            " VALUES (?, ?, 'human', ?, 1.0, ?) ON CONFLICT DO NOTHING",
            [f"review-{item_id}", case_id, label, actor],
        )
    return str(item_id)
