"""Gates on what the artifact is, before any row is scored: its label set (``task.labels``)
and, when the contract asks serving to abstain on unknown inputs (``fallback.open_set``), the
open-set scorer fitted at export. Both are hard: an artifact that cannot do what the contract
says must not serve.
"""

from __future__ import annotations

from tutorloop.registry.contract import Contract
from tutorloop.registry.gate_rules import GateResult, constraint
from tutorloop.registry.onnx_model import OnnxStudent


def label_set_gates(contract: Contract, labels: list[str]) -> list[GateResult]:
    if not contract.task.labels:
        return []
    expected, got = set(contract.task.labels), set(labels)
    detail = (
        "matches the contract"
        if expected == got
        else f"missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"
    )
    same = float(expected == got)
    return [constraint("label_set", same, 1.0, ">=", "task.labels", detail)]


def open_set_gates(contract: Contract, model: OnnxStudent) -> list[GateResult]:
    if not contract.fallback.open_set:
        return []
    ready = model.open_set is not None and model.open_set.abstains
    detail = "scorer and threshold fitted at export" if ready else (
        "no threshold: see the card's open_set (too few validation rows for the budget?)"
        if model.open_set is not None else "no scorer: see the card's open_set"
    )  # fmt: skip
    return [constraint("open_set", float(ready), 1.0, ">=", "fallback.open_set", detail)]
