"""Versions marked by an erasure: trained on a dataset that held an erased user's rows.

An erasure record lists them (``erasures.model_versions``). Their weights saw the user's rows
and are not edited, so a marked version is never warm-started from (the next retrain starts
from the newest unmarked ancestor, or cold) and is returned to only by a forced rollback.
"""

from __future__ import annotations

import json

from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.store import ModelVersion, UnknownVersionError, get

__all__ = ["clean_warm_start", "marked_versions"]


def marked_versions(warehouse: Warehouse) -> dict[str, list[str]]:
    """Each marked version with the erasures that mark it, oldest first."""
    marks: dict[str, list[str]] = {}
    for erasure_id, versions in warehouse.query(
        "SELECT erasure_id, model_versions FROM erasures ORDER BY ts, erasure_id"
    ):
        for version in json.loads(versions or "[]"):
            marks.setdefault(str(version), []).append(str(erasure_id))
    return marks


def clean_warm_start(
    warehouse: Warehouse, champion: ModelVersion | None
) -> tuple[ModelVersion | None, list[str]]:
    """The version a retrain may warm-start from: the champion, else its newest warm-start
    ancestor no erasure marks, else none (a cold start); and the marked versions passed over."""
    marks = marked_versions(warehouse)
    skipped: list[str] = []
    current = champion
    while current is not None and current.version in marks:
        skipped.append(current.version)
        parent = current.card.get("warm_start_from")
        try:
            current = get(warehouse, parent) if isinstance(parent, str) else None
        except UnknownVersionError:
            current = None
        if current is not None and current.version in skipped:
            current = None
    return current, skipped
