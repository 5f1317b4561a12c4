"""Loading the student for training: a 4-bit (QLoRA) or full-precision base with LoRA adapters.

``trainer.quantization`` is resolved once per process for the machine
(:func:`tutorloop.infra.machine.training_path`): ``auto`` trains nf4 only where bitsandbytes
has a fast 4-bit kernel, LoRA on the fp32 base elsewhere. QLoRA follows the recipe that works
on CPU here: nf4 with double quantization, bf16 compute, the classifier head and pooler left
unquantized (without that skip list the first forward fails), ``prepare_model_for_kbit_training``,
LoRA on all linear layers. Where 4-bit cannot load, the student trains as LoRA in fp32 with a
warning, and the run records why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tutorloop.infra.machine import TrainingPath, training_path
from tutorloop.infra.settings_sections import TrainerSettings

log = logging.getLogger(__name__)


@dataclass
class Student:
    model: Any  # a peft PeftModel
    tokenizer: Any
    fallback_reason: str | None  # why 4-bit was asked for and could not load
    path: TrainingPath  # what was asked, what it trains on (after a fallback) and why

    @property
    def quantization(self) -> str:
        """``nf4`` or ``none``: what it trains on."""
        return self.path.quantization


def _base(folder: Path, labels: list[str], quantize: bool) -> Any:
    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if quantize:
        # Imported at call time, from whatever ``transformers`` is loaded then: a machine (or a
        # test) without 4-bit support lacks or replaces it, and the run falls back to fp32.
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=["classifier", "pooler"],
        )
        # The trainer runs on the CPU; transformers would put a 4-bit model on cuda:0 when a
        # GPU is present, away from the batches.
        kwargs["device_map"] = {"": "cpu"}
    return AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)


def _keep_training_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during validation.

    On CPUs with AVX512-BF16, a ``Linear4bit`` in eval mode converts its weights, in place and
    for good, to an inference-only layout; the next training step then fails ("a view of a
    leaf Variable that requires grad is being used in an in-place operation").
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_student(
    base_folder: Path,
    labels: list[str],
    cfg: TrainerSettings,
    *,
    init_adapter: Path | None = None,
) -> Student:
    """The base (4-bit when configured and possible) with trainable LoRA adapters.

    ``init_adapter`` warm-starts from an earlier adapter (the champion's); its label set must
    be ``labels``, which the caller checks.
    """

    tokenizer = AutoTokenizer.from_pretrained(str(base_folder))
    path = resolve_training_path(cfg.quantization)
    quantization, reason = path.quantization, None
    if quantization == "nf4":
        try:
            base = _base(base_folder, labels, quantize=True)
            _keep_training_layout(base)
            base = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
                base, use_gradient_checkpointing=False
            )
        except Exception as exc:  # missing bitsandbytes backend, unsupported CPU, ...
            reason = f"4-bit load failed ({type(exc).__name__}: {str(exc)[:200]})"
            log.warning("QLoRA unavailable, training LoRA in full precision: %s", reason)
            quantization = "none"
    if quantization == "none":
        base = _base(base_folder, labels, quantize=False)
    if quantization != path.quantization:
        path = replace(path, quantization="none", reason=f"{path.reason}; then {reason}")
    if init_adapter is not None:
        model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    else:
        model = get_peft_model(
            base,
            LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules="all-linear",
            ),
        )
    return Student(model, tokenizer, reason, path)


@cache
def resolve_training_path(requested: str) -> TrainingPath:
    """The training path for this process, decided once; an explicit nf4 on a device without
    the fast kernel trains as asked and warns once, with the measured cost."""
    path = training_path(requested)
    if path.slow:
        log.warning("trainer.quantization = nf4: %s", path.reason)
    else:
        log.info("training path: %s (%s)", path.quantization, path.reason)
    return path


def save_student(student: Student, folder: Path, labels: list[str], temperature: float) -> None:
    """Adapter (with the trained head), tokenizer, label set and calibration temperature."""
    folder.mkdir(parents=True, exist_ok=True)
    student.model.save_pretrained(str(folder / "adapter"))
    student.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / "labels.json").write_text(json.dumps(labels, indent=2))
    (folder / "calibration.json").write_text(json.dumps({"temperature": temperature}))


def param_groups(model: Any, *, adapter_lr: float, head_lr: float) -> list[dict[str, Any]]:
    """The trainable parameters in two optimizer groups, adapters (LoRA) and the head (every
    other trainable tensor), each at its own learning rate; a group with nothing to train
    (frozen adapters) is left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if "lora_" in n], "lr": adapter_lr},
        {"params": [p for n, p in trainable if "lora_" not in n], "lr": head_lr},
    ]
    return [group for group in groups if group["params"]]
