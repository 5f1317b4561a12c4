"""Gates on what the artifact is, before any row is scored: its label set (``task.labels``)
and, when the contract asks serving to abstain on unknown inputs (``fallback.open_set``), the
open-set scorer fitted at export. Both are hard — an artifact that cannot do what the contract
says must not serve — except an open-set scorer whose threshold could not be placed for lack of
validation rows: that is ``insufficient``, and blocks as ``evaluation.on_insufficient`` says.
"""

from __future__ import annotations

from tutorloop.infra.tables import GateVerdict as Verdict
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
    if model.open_set is None:
        detail = "no scorer: see the card's open_set"
        return [constraint("open_set", 0.0, 1.0, ">=", "fallback.open_set", detail)]
    if model.open_set.abstains:
        detail = "scorer and threshold fitted at export"
        return [constraint("open_set", 1.0, 1.0, ">=", "fallback.open_set", detail)]
    # A scorer whose validation rows were too few to place a threshold that holds the budget:
    # too little evidence, not a defect (no version of a small task could pass, and the loop
    # would stop promoting). Like every insufficient gate it blocks only where the contract
    # says so; the version serves without open-set abstention, and serving warns.
    return [
        GateResult(
            "open_set", 0.0, 1.0, ">=", contract.evaluation.on_insufficient == "warn",
            "no threshold: too few correct validation rows to hold the budget (the card's "
            "open_set); serves without open-set abstention",
            clause="fallback.open_set", verdict=Verdict.INSUFFICIENT,
        )
    ]  # fmt: skip
