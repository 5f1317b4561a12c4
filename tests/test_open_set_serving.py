"""The served embeddings end to end. The open-set scorer: fitted at export on the int8
artifact's own embeddings, checksummed with the version, gated when the contract asks for it,
and used by serving to abstain on inputs unlike anything the student was trained on. The
cycle's labeling budget: the champion's view of the captured cases decides what is bought."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.registry_fixtures import first_version, registry_settings
from tests.test_trainer import TEST, TRAIN
from tests.warehouse_cases import capture
from tutorloop.evaluation.retrieval import RetrievalMemory
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.acquisition import margins
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.labeling.relabel import pending_cases
from tutorloop.loop.acquire import cases_to_label
from tutorloop.loop.cycle import CycleReport
from tutorloop.registry.contract import load_contract
from tutorloop.registry.gate_artifact import open_set_gates
from tutorloop.registry.onnx_model import (
    OPEN_SET,
    ServedMemory,
    calibrated_proba,
    load_onnx_student,
)
from tutorloop.registry.served_embeddings import served_rows
from tutorloop.registry.served_memory import fit_served_memory
from tutorloop.registry.served_open_set import fit_served_open_set
from tutorloop.registry.store import get
from tutorloop.registry.torch_model import load_torch_student
from tutorloop.registry.version_rows import split_rows
from tutorloop.serving.prediction import PredictRequest
from tutorloop.serving.predictor import Predictor
from tutorloop.trainer.inference import predict_logits_and_embeddings

# Questions from other domains, written for this test (none is about banking).
OFF_DOMAIN = [
    "What will the weather be like in Lisbon tomorrow afternoon?",
    "Recommend me a science fiction novel with a good twist",
    "How many calories are there in a medium banana?",
    "Set an alarm for seven tomorrow morning",
    "Who won the football world cup in 2014?",
    "Translate good morning into Italian please",
    "How do I change a flat tyre on my bike?",
    "Play some relaxing jazz in the living room",
    "What is a good recipe for vegetarian lasagna?",
    "How tall is Mount Everest in metres?",
    "Book a table for four at an Italian restaurant tonight",
    "What time does the pharmacy on Main Street close?",
    "Can you tell me a joke about penguins",
    "How long should I boil an egg for a runny yolk?",
    "Which planet has the most moons?",
    "Turn off the lights in the kitchen",
    "What's the plot of the second Harry Potter book?",
    "How do I get rid of aphids on my roses?",
    "Remind me to water the plants on Saturday",
    "How many players are on a volleyball team?",
    "What is the capital city of Australia?",
    "Find me a cheap flight to Oslo in March",
    "Why is the sky blue during the day?",
    "What's the best way to learn to play guitar as an adult?",
]


def _with_open_set(settings: Settings, on: bool) -> Settings:
    # 24 validation rows (3 per intent) cannot hold a 2-point budget with 95% confidence (it
    # takes ~150 correct rows); 15 points can be held with the lowest correct row's score.
    serving = {"open_set": on, "open_set_max_accuracy_drop": 0.15}
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


def _reasons(predictor: Predictor, texts: list[str]) -> list[str | None]:
    return [p.abstain_reason for p in predictor.score([PredictRequest(text=t) for t in texts])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, CycleReport]:
    """v1, trained, exported and gated once for the tests here, which only read it (its
    warehouse gains captured cases in the acquisition test, which runs last)."""
    settings = _with_open_set(registry_settings(tmp_path_factory.mktemp("v1") / "d"), True)
    return settings, first_version(settings)


@pytest.mark.timeout(900)
def test_the_served_student_abstains_on_what_it_was_not_trained_for(
    tmp_path: Path, exported: tuple[Settings, CycleReport]
) -> None:
    settings, report = exported
    assert report.gates is not None and report.gates["passed"], report.gates
    folder = get(open_warehouse(settings), "v1").artifact_dir
    card = json.loads((folder / "card.json").read_text())
    section = card["open_set"]
    assert section["fitted"] and section["method"] == "relative_mahalanobis", section
    assert OPEN_SET in card["files"]  # checksummed with the version: tampering is refused
    # The threshold holds its budget on the rows it was chosen on.
    lost = section["validation_accuracy"] - section["validation_accuracy_answered"]
    assert lost <= section["max_accuracy_drop"] + 1e-9 and section["validation_rows"] > 0

    # With the default 2-point budget the same 24 rows place no threshold, and say why.
    warehouse = open_warehouse(settings)
    version = get(warehouse, "v1")
    shutil.copytree(folder, tmp_path / "copy")
    rows = {split: [(t, y) for _, t, y in split_rows(warehouse, version.dataset_hash, split)]
            for split in ("train", "validation")}  # fmt: skip
    embedded = served_rows(tmp_path / "copy", rows["train"], rows["validation"])
    strict = fit_served_open_set(tmp_path / "copy", embedded, max_accuracy_drop=0.02)
    assert strict["threshold"] is None and "95% confidence" in strict["reason"], strict

    # The retrieval memory: shipped only where it lowered the validation rows' log loss, never
    # for a DP-trained version; loaded unless serving.retrieval is off.
    retrieval = card["retrieval"]
    assert retrieval["used"] == (retrieval["weight"] > 0) and retrieval["memory_rows"] == 216
    with_memory = load_onnx_student(folder, retrieval=True)
    assert (with_memory.memory is not None) == retrieval["used"]
    assert load_onnx_student(folder).memory is None  # serving.retrieval is off by default
    dp = fit_served_memory(tmp_path / "copy", embedded, dp=True)
    assert not dp["used"] and "DP" in dp["reason"]
    # The memory's vote on rows it holds is their own label: mixing it in moves answers.
    assert not isinstance(embedded, str)
    memory = ServedMemory(RetrievalMemory.build(embedded.train_embeddings, embedded.train_targets,
                                                8), k=5, tau=0.05, weight=0.9)  # fmt: skip
    train_texts = [t for t, _ in rows["train"]]
    voted = replace(with_memory, memory=memory).predict_proba(train_texts).argmax(axis=1)
    assert np.mean(voted == embedded.train_targets) > 0.95

    # The served embedding is the trainer's pooled embedding, through int8.
    model = load_onnx_student(folder)
    assert model.has_embedding and model.open_set is not None and model.open_set.abstains
    texts = read_labeled_csv(TEST).texts[:20]
    torch_student = load_torch_student(folder)
    ids = [torch_student.tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in texts]
    _, reference = predict_logits_and_embeddings(torch_student.model, torch_student.tokenizer, ids)
    served = np.vstack([model.logits_and_embeddings([t])[1] for t in texts])
    ref = reference.numpy()
    cosine = np.sum(served * ref, 1) / np.linalg.norm(served, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.95, cosine

    # Serving: off-domain questions are called out of scope far more often than in-scope ones.
    in_scope = read_labeled_csv(TEST).texts
    predictor = Predictor(settings)
    try:
        on_known = _reasons(predictor, in_scope)
        on_unknown = _reasons(predictor, OFF_DOMAIN)
    finally:
        predictor.close()
    known_rate = on_known.count("out_of_scope") / len(on_known)
    unknown_rate = on_unknown.count("out_of_scope") / len(on_unknown)
    assert unknown_rate >= 0.6 and known_rate <= 0.2, (unknown_rate, known_rate)
    assert set(on_known) <= {None, "low_confidence", "out_of_scope"}

    off = Predictor(_with_open_set(settings, False))  # the setting, not the artifact, decides
    try:
        assert "out_of_scope" not in _reasons(off, OFF_DOMAIN)
    finally:
        off.close()
    assert report.gates["values"]["open_set"] == 1.0  # the contract asked for it: gated
    # An artifact without a scorer (exported before it, or too few rows) cannot serve such a
    # contract: the gate is hard.
    contract = load_contract(settings)
    [unfit] = open_set_gates(contract, replace(model, open_set=None))
    assert not unfit.passed and "no scorer" in unfit.detail
    no_threshold = replace(model, open_set=replace(model.open_set, threshold=None))
    # Too few validation rows to place a threshold is too little evidence, not a defect: it
    # warns by default (else a small task could never promote) and blocks where asked to.
    [unplaced] = open_set_gates(contract, no_threshold)
    assert unplaced.passed and unplaced.verdict == "insufficient"
    assert "no threshold" in unplaced.detail
    blocking = contract.model_copy(
        update={"evaluation": contract.evaluation.model_copy(update={"on_insufficient": "block"})}
    )
    [blocked] = open_set_gates(blocking, no_threshold)
    assert not blocked.passed and blocked.verdict == "insufficient"
    assert not no_threshold.predict_with_scope(OFF_DOMAIN)[1].any()  # it never abstains


def test_the_cycle_buys_the_cases_the_champion_is_least_sure_of_audit_first(
    exported: tuple[Settings, CycleReport],
) -> None:
    settings, _ = exported  # the exported champion's view of the cases ranks them
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
    logits, _ = model.logits_and_embeddings([c.text for c in pending])  # as the cycle ranks
    ranks = margins(calibrated_proba(logits, model.temperature))
    margin = dict(zip([c.case_id for c in pending], ranks, strict=True))

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
    audit = (case_ids[50], case_ids[70])
    ranked = sorted(m for c, m in margin.items() if c not in audit)
    # margin buys the 10 least sure cases; margin_diverse spreads its 10 over the 4 x 10 least
    # sure (labeling.acquisition's pool): the pool, not the mean, bounds what it buys.
    for policy, pool in (("margin", 10), ("margin_diverse", 40)):
        picked = chosen(policy, 12)
        assert len(picked) == 12 and set(audit) <= set(picked)
        bought = [margin[c] for c in picked if c not in audit]
        assert max(bought) <= ranked[pool - 1], (policy, bought)
        if policy == "margin":  # the champion's least sure: far below what is left
            rest = [m for c, m in margin.items() if c not in picked]
            assert np.mean(bought) < np.mean(rest) - 0.1, (policy, bought)
