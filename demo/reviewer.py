"""The demo's reviewers: each week they resolve the open spot checks with the traffic's true
labels, as people working through `tutorloop teacher review` would (blind to the teacher)."""

from __future__ import annotations

from typing import Any

from tutorloop.infra.tables import ReviewReason
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.agreement import spot_check_agreement
from tutorloop.labeling.review import resolve


def review_spot_checks(warehouse: Warehouse, truth: dict[str, str]) -> int:
    """Resolve every open spot check whose request the demo served; return how many."""
    rows = warehouse.query(
        "SELECT r.item_id, c.request_id FROM review_queue r JOIN cases c USING (case_id)"
        " WHERE r.reason = ? AND r.status = 'open' ORDER BY r.item_id",
        [str(ReviewReason.SPOT_CHECK)],
    )
    done = 0
    for item_id, request_id in rows:
        label = truth.get(request_id)
        if label is not None:
            resolve(warehouse, item_id, label, "demo-reviewer")
            done += 1
    return done


def agreement_rows(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Spot-check agreement per teacher and per label it gave, as plain rows for the report."""
    return [a.to_dict() for a in spot_check_agreement(warehouse)]
