"""Versions marked by an erasure: trained on a dataset that held an erased user's rows.

An erasure record lists them (``erasures.model_versions``) and the datasets that held the
user's rows; versions registered later from those datasets, or warm-started from a marked
version, are marked too. Their weights saw the user's rows
and are not edited, so a marked version is never warm-started from (the next retrain starts
from the newest unmarked ancestor, or cold) and is returned to only by a forced rollback.
"""

from __future__ import annotations

import json

from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.store import ModelVersion, warm_start_chain

__all__ = ["clean_warm_start", "marked_versions"]


def marked_versions(warehouse: Warehouse) -> dict[str, list[str]]:
    """Each marked version with the erasures that mark it: those an erasure record lists,
    those trained on a dataset an erasure names (a run still training when the user was
    erased registers later), and every version warm-started from a marked one."""
    marks: dict[str, list[str]] = {}
    by_dataset: dict[str, list[str]] = {}

    def mark(version: str, erasure_id: str) -> bool:
        found = marks.setdefault(version, [])
        if erasure_id in found:
            return False
        found.append(erasure_id)
        return True

    for erasure_id, datasets, versions in warehouse.query(
        "SELECT erasure_id, dataset_versions, model_versions FROM erasures ORDER BY ts, erasure_id"
    ):
        for version in json.loads(versions or "[]"):
            mark(str(version), str(erasure_id))
        for dataset in json.loads(datasets or "[]"):
            by_dataset.setdefault(str(dataset), []).append(str(erasure_id))
    if not marks and not by_dataset:
        return {}
    parent: dict[str, str | None] = {}
    for version, dataset, card in warehouse.query(
        "SELECT mv.version, tr.dataset_hash, mv.card FROM model_versions mv"
        " LEFT JOIN training_runs tr USING (run_id)"
    ):
        for erasure_id in by_dataset.get(str(dataset), []):
            mark(str(version), erasure_id)
        parent[str(version)] = json.loads(card or "{}").get("warm_start_from")
    changed = True
    while changed:
        changed = False
        for version, ancestor in parent.items():
            for erasure_id in list(marks.get(ancestor or "", [])):
                changed |= mark(version, erasure_id)
    return {version: found for version, found in marks.items() if found}


def clean_warm_start(
    warehouse: Warehouse, champion: ModelVersion | None
) -> tuple[ModelVersion | None, list[str]]:
    """The version a retrain may warm-start from: the champion, else its newest warm-start
    ancestor no erasure marks, else none (a cold start); and the marked versions passed over."""
    if champion is None:
        return None, []
    marks = marked_versions(warehouse)
    skipped: list[str] = []
    current: ModelVersion | None = None
    for version in warm_start_chain(warehouse, champion):
        if version.version not in marks:
            current = version
            break
        skipped.append(version.version)
    return current, skipped
