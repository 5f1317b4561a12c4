"""Which captured cases the teacher labels this cycle when ``teacher.label_budget`` is set.

The policies are :mod:`tutorloop.labeling.acquisition`'s; this module gives them the
champion's view of the pending cases (calibrated probabilities and sentence embeddings from
its served int8 artifact). Audit-sample, escalated and synthetic cases are always taken
first: the unbiased slice, the cases people flagged, and what the synthesis step chose.
Cases left out wait for a later cycle.
"""

from __future__ import annotations

import numpy as np

from tutorloop.infra.settings import Settings
from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.warehouse import Warehouse
from tutorloop.labeling.acquisition import select
from tutorloop.labeling.relabel import PendingCase, pending_cases
from tutorloop.registry.onnx_model import INT8, calibrated_proba, load_onnx_student
from tutorloop.registry.store import champion

# Synthetic cases were chosen when they were written (``teacher.synthesis.max_sources``).
_ALWAYS = (CaptureReason.AUDIT_SAMPLE, CaptureReason.ESCALATED, CaptureReason.SYNTHETIC)


def cases_to_label(
    settings: Settings, warehouse: Warehouse, teacher_id: str
) -> list[PendingCase] | None:
    """The pending cases to label, in arrival order; ``None`` when there is no budget."""
    budget = settings.teacher.label_budget
    if budget <= 0:
        return None
    cases = pending_cases(warehouse, teacher_id)
    if len(cases) <= budget:
        return cases
    always = np.array([c.capture_reason in _ALWAYS for c in cases])
    policy = settings.teacher.acquisition
    current = champion(warehouse)
    exported = current is not None and (current.artifact_dir / INT8).is_file()
    model = load_onnx_student(current.artifact_dir) if current is not None and exported else None
    if policy == "oldest" or model is None or not model.has_embedding:
        # Without an exported champion (or one from before embeddings) there is no view to
        # rank by: first come, first labeled.
        chosen = select("oldest", budget, np.zeros((len(cases), 2)), always=always)
    else:
        logits, embeddings = model.logits_and_embeddings([c.text for c in cases])
        probs = calibrated_proba(logits, model.temperature)
        chosen = select(policy, budget, probs, embeddings=embeddings, always=always)
    return [cases[i] for i in sorted(chosen)]
