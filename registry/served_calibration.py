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
from tutorloop.registry.onnx_model import INT8, calibrated_proba, load_onnx_student

CALIBRATION = "calibration.json"


def recalibrate_served(
    folder: Path,
    card: dict[str, Any],
    validation: list[tuple[str, str]],
    gold: tuple[list[str], np.ndarray[Any, Any], Any] | None,
) -> dict[str, Any]:
    """Refit the temperature on the int8 artifact in ``folder``; return the card's ``served``
    section. ``validation``: (text, label) rows to fit on; ``gold``: the evaluation labels,
    the int8 artifact's logits on those rows (one query at a time, from the parity check)
    and the merged fp32 network's answers."""
    model = load_onnx_student(folder, verified=True, model_path=folder / INT8)
    trained_t = float(json.loads((folder / CALIBRATION).read_text())["temperature"])
    served_t = trained_t
    if validation:
        logits = np.vstack([model.logits([text]) for text, _ in validation])
        served_t = fit_temperature(logits, label_targets(model.labels, [y for _, y in validation]))
    (folder / CALIBRATION).write_text(
        json.dumps({"temperature": served_t, "training_temperature": trained_t,
                    "fitted_on": "int8 artifact, validation split, one query at a time"})
    )  # fmt: skip
    section: dict[str, Any] = {
        "temperature": served_t, "training_temperature": trained_t,
        "validation_rows": len(validation),
    }  # fmt: skip
    if gold is not None:
        truth, gold_logits, fp32_argmax = gold
        targets = label_targets(model.labels, truth)
        trained = (card.get("metrics") or {}).get("eval") or {}
        fp32_accuracy = float(np.mean(np.asarray(fp32_argmax) == targets))
        section["eval"] = quality(calibrated_proba(gold_logits, served_t), targets).to_dict()
        section["gold_rows"] = len(truth)
        section["fp32_merged_accuracy"] = fp32_accuracy
        if "accuracy" in trained:
            section["trained_accuracy"] = float(trained["accuracy"])
            section["train_serve_gap"] = float(trained["accuracy"]) - fp32_accuracy
    return section
