"""Train what you serve: the temperature and the card's metrics belong to the served network.

The student is trained (QLoRA: the adapter on the nf4 base, or plain LoRA) and calibrated by
the trainer on the network it trained; the exporter merges the adapter into the base as
training saw it (rounded through nf4 for QLoRA, :mod:`tutorloop.registry.torch_model`) and
quantizes that to int8. After export the temperature is refitted on the int8 artifact's own
logits on the validation split (one query at a time, as it serves), and the card records
what the network as trained, the merged fp32 network and the int8 artifact score on the gold
evaluation rows, so a gap between training and serving is stated, not hidden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.evaluation.calibration import fit_temperature
from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.metrics import quality
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.onnx_model import INT8, load_onnx_student

CALIBRATION = "calibration.json"


def split_rows(
    warehouse: Warehouse, dataset_hash: str | None, split: str
) -> list[tuple[str, str, str]]:
    """(case_id, text, label) of one split of a dataset version, in case-id order."""
    if not dataset_hash:
        return []
    return [
        (str(c), str(t), str(label))
        for c, t, label in warehouse.query(
            "SELECT m.case_id, c.text, m.label FROM dataset_members m JOIN cases c"
            " USING (case_id) WHERE m.dataset_hash = ? AND m.split = ? ORDER BY m.case_id",
            [dataset_hash, split],
        )
    ]


def recalibrate_served(
    warehouse: Warehouse,
    folder: Path,
    card: dict[str, Any],
    gold: tuple[list[str], list[str]],
    fp32_argmax: Any,
) -> dict[str, Any]:
    """Refit the temperature on the int8 artifact in ``folder``; return the card's ``served``
    section. ``gold``: the evaluation texts and labels; ``fp32_argmax``: the merged fp32
    network's answers on them."""
    validation = split_rows(warehouse, card.get("dataset_hash"), "validation")
    model = load_onnx_student(folder, verified=True, model_path=folder / INT8)
    trained_t = float(json.loads((folder / CALIBRATION).read_text())["temperature"])
    served_t = trained_t
    if validation:
        logits = np.vstack([model.logits([t]) for _, t, _ in validation])
        targets = label_targets(model.labels, [label for _, _, label in validation])
        served_t = fit_temperature(logits, targets)
    (folder / CALIBRATION).write_text(
        json.dumps({"temperature": served_t, "training_temperature": trained_t,
                    "fitted_on": "int8 artifact, validation split, one query at a time"})
    )  # fmt: skip
    section: dict[str, Any] = {
        "temperature": served_t, "training_temperature": trained_t,
        "validation_rows": len(validation),
    }  # fmt: skip
    texts, truth = gold
    if texts:
        model.temperature = served_t
        targets = label_targets(model.labels, truth)
        probs = np.vstack([model.predict_proba([t]) for t in texts])
        trained = (card.get("metrics") or {}).get("eval") or {}
        fp32_accuracy = float(np.mean(np.asarray(fp32_argmax) == targets))
        section["eval"] = quality(probs, targets).to_dict()
        section["gold_rows"] = len(texts)
        section["fp32_merged_accuracy"] = fp32_accuracy
        if "accuracy" in trained:
            section["trained_accuracy"] = float(trained["accuracy"])
            section["train_serve_gap"] = float(trained["accuracy"]) - fp32_accuracy
    return section
