"""Write a contract as a commented ``contract.toml`` (``tutorloop contract init``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tutorloop.registry.contract import Contract

_SECTIONS: dict[str, str] = {
    "task": "What the model answers. A candidate must predict exactly these labels.",
    "quality": "Floors on the gold evaluation set, measured on the served int8 artifact.",
    "serving": "Hard constraints of the served artifact (always block when missed).",
    "privacy": "What training must respect. max_user_epsilon: the user-level DP guarantee.",
    "fallback": "Below abstain_below the server abstains and the case is routed to route_to; "
    "with open_set, also when the model's open-set scorer calls the input unknown (its "
    "threshold costs the validation rows at most open_set_max_accuracy_drop of accuracy), and "
    "the OOS gates count those abstentions as out-of-scope answers.",
    "champion": "Largest regression allowed against the champion (paired non-inferiority).",
    "parity": "int8 vs the fp32 network: argmax agreement on decisive rows (top-2 margin >= "
    "tie_margin) and accuracy non-inferior by max_accuracy_drop.",
    "teacher": "Expected accuracy gap between the teacher and the student (reported).",
    "evaluation": "How evaluation rows are sampled and judged. Below min_rows (min_oos_rows "
    "for OOS gates, min_comparison_rows for champion comparisons) a gate is 'insufficient'; "
    "on_insufficient says whether that blocks promotion.",
    "live": "A shadow or canary version on live traffic, per window of serving.window_s "
    "(windows with fewer than min_requests are not judged): a breach rolls it back; "
    "serving.max_p95_latency_ms bounds its latency.",
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list) and len(value) > 4:
        return "[\n" + "".join(f"    {json.dumps(v)},\n" for v in value) + "]"
    return json.dumps(value)  # strings and short lists: JSON and TOML agree


def render_contract(contract: Contract) -> str:
    """A TOML document that reads back to ``contract`` (same :attr:`Contract.digest`)."""
    data = contract.model_dump(mode="json")
    lines = [
        "# tutorloop model contract: what a student must do before it may serve.",
        "# Every gate cites a clause of this file; promotions record its hash.",
        "# Change a value, then bump `version`: the next gate run is judged under the new one.",
        "",
        f"format = {data.pop('format')}",
        f"version = {json.dumps(data.pop('version'))}",
    ]
    for section, values in data.items():
        lines += ["", f"# {_SECTIONS[section]}", f"[{section}]"]
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_contract(contract: Contract, path: Path, *, overwrite: bool = False) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(render_contract(contract))
    tmp.replace(path)
