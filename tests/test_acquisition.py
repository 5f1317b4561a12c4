"""Acquisition under a budget: uncertainty by margin, diversity by k-center, audit cases first;
in the cycle, ranked by the exported champion's own view of the captured cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.registry_fixtures import first_version, registry_settings
from tests.test_trainer import TRAIN
from tests.warehouse_cases import capture
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.acquisition import k_center_greedy, margins, select
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.relabel import pending_cases
from tutorloop.loop.acquire import cases_to_label
from tutorloop.registry.onnx_model import load_onnx_student
from tutorloop.registry.store import get


def _clusters(rng: np.random.Generator, centers: int, per: int, dim: int = 16) -> np.ndarray:
    middle = rng.normal(size=(centers, dim)) * 5
    return np.vstack([c + rng.normal(scale=0.05, size=(per, dim)) for c in middle])


def test_margin_is_top1_minus_top2() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    assert margins(probs) == pytest.approx([0.2, 0.01, 0.85])


def test_k_center_takes_one_case_per_cluster_and_skips_what_is_covered() -> None:
    points = _clusters(np.random.default_rng(0), centers=4, per=25)
    picked = k_center_greedy(points, 4)
    assert sorted(i // 25 for i in picked) == [0, 1, 2, 3]
    # With clusters 0 and 1 labeled already, two picks go to clusters 2 and 3.
    covered = points[[0, 30]]
    assert sorted(i // 25 for i in k_center_greedy(points, 2, covered)) == [2, 3]
    assert k_center_greedy(points, 0) == [] and len(k_center_greedy(points[:3], 10)) == 3


def test_policies_choose_differently_and_audit_cases_always_come_first() -> None:
    rng = np.random.default_rng(1)
    n = 60
    # The 20 most uncertain cases are near-copies of one question; the rest are spread out.
    embeddings = np.vstack([_clusters(rng, 1, 20), _clusters(rng, 40, 1)])
    top = np.concatenate([np.full(20, 0.34), np.linspace(0.5, 0.95, 40)])
    probs = np.stack([top, 1 - top - 0.01, np.full(n, 0.01)], axis=1)
    probs[:20, 1] = 0.33  # margin 0.01: the closest calls
    assert select("oldest", 5, probs) == [0, 1, 2, 3, 4]
    by_margin = select("margin", 10, probs)
    assert set(by_margin) <= set(range(20))
    diverse = select("margin_diverse", 10, probs, embeddings=embeddings)
    assert len(set(diverse)) == 10
    assert sum(i < 20 for i in diverse) <= 2  # one question is paid for about once
    always = np.zeros(n, dtype=bool)
    always[[45, 59]] = True
    chosen = select("margin", 4, probs, always=always)
    assert chosen[:2] == [45, 59] and len(chosen) == 4
    assert select("margin", 1, probs, always=always) == [45]
    with pytest.raises(ValueError, match="embeddings"):
        select("margin_diverse", 3, probs)


@pytest.mark.timeout(600)
def test_the_cycle_buys_the_cases_the_champion_is_least_sure_of_audit_first(
    tmp_path: Path,
) -> None:
    settings = registry_settings(tmp_path / "d")
    assert first_version(settings).version == "v1"  # exported: the champion's view exists
    warehouse = open_warehouse(settings)
    texts = read_labeled_csv(TRAIN).texts[-80:]
    case_ids = capture(warehouse, texts)
    with warehouse.transaction() as con:  # two of them came from the audit sample
        con.execute(
            "UPDATE cases SET capture_reason = 'audit_sample' WHERE case_id IN (?, ?)",
            [case_ids[50], case_ids[70]],
        )
    pending = pending_cases(warehouse, "t")
    assert len(pending) == 80
    model = load_onnx_student(get(warehouse, "v1").artifact_dir)
    margin = dict(zip([c.case_id for c in pending], margins(model.predict_proba(
        [c.text for c in pending])), strict=True))  # fmt: skip

    def chosen(policy: str, budget: int) -> list[str]:
        teacher = settings.teacher.model_copy(
            update={"label_budget": budget, "acquisition": policy}
        )
        picked = cases_to_label(settings.model_copy(update={"teacher": teacher}), warehouse, "t")
        assert picked is not None
        return [c.case_id for c in picked]

    assert cases_to_label(settings, warehouse, "t") is None  # no budget: every case
    assert len(chosen("oldest", 500)) == 80  # a budget above the backlog takes it all
    oldest = chosen("oldest", 12)
    assert set(oldest) == {*[c.case_id for c in pending][:10], case_ids[50], case_ids[70]}
    for policy in ("margin", "margin_diverse"):
        picked = chosen(policy, 12)
        assert len(picked) == 12 and {case_ids[50], case_ids[70]} <= set(picked)
        bought = [margin[c] for c in picked if c not in (case_ids[50], case_ids[70])]
        rest = [m for c, m in margin.items() if c not in picked]
        # The champion's least sure cases: far below what is left (margins run 0 to 1).
        assert np.mean(bought) < np.mean(rest) - 0.1, (policy, bought)
