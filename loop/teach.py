"""The cycle's teaching step: relabel what was captured, write synthetic cases from it when
``teacher.synthesis`` is on, and relabel those.

The teacher labels synthetic cases like captured ones (through the cache, with provenance);
dataset assembly keeps one only where that label is the one it was written for.
"""

from __future__ import annotations

from typing import Any

from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.relabel import pending_cases, queue_unlabeled_for_humans, relabel
from tutorloop.labeling.synthesis import write_and_label
from tutorloop.labeling.teachers import build_teacher
from tutorloop.loop.acquire import cases_to_label
from tutorloop.loop.progress import ProgressFactory


def teach(settings: Settings, warehouse: Warehouse, progress: ProgressFactory) -> dict[str, Any]:
    """Relabel (and synthesize); return the report the cycle keeps under ``relabel``."""
    teacher = build_teacher(settings, warehouse)
    if teacher is None:
        return {"teacher_id": "human", "queued": queue_unlabeled_for_humans(warehouse)}
    with progress("relabeling", None) as advance:
        chosen = cases_to_label(settings, warehouse, teacher.info.teacher_id)
        report = relabel(
            warehouse, teacher, batch_size=settings.teacher.batch_size, cases=chosen,
            review_below=settings.teacher.review_below,
            spot_check=settings.teacher.spot_check_fraction, on_batch=advance,
        ).to_dict()  # fmt: skip
    if chosen is not None:  # a budget: what it did not buy waits for a later cycle
        report["waiting"] = len(pending_cases(warehouse, teacher.info.teacher_id))
    if settings.teacher.synthesis.enabled:
        with progress("writing and labeling synthetic cases", None) as advance:
            report["synthesis"] = write_and_label(settings, warehouse, teacher, advance)
    return report
