"""The maths behind the gates and the trainer, against values computed by hand from their
definitions (and scipy where a reference exists)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from tutorloop.evaluation.metrics import (
    aurc,
    ece,
    macro_f1,
    reliability,
    risk_coverage,
    selective_accuracy,
)
from tutorloop.registry.export import _decisive
from tutorloop.registry.gates import _paired_regression
from tutorloop.trainer.calibration import fit_temperature
from tutorloop.trainer.distillation import distillation_loss


def _two_class(confidence: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose max is ``confidence`` on class 0; target 0 where ``correct``."""
    probs = np.array([[c, 1 - c] for c in confidence])
    targets = np.array([0 if ok else 1 for ok in correct])
    return probs, targets


def test_ece_and_reliability_bins_by_hand() -> None:
    # 15 right-closed bins of width 1/15: 0.9 falls in bin 13, 0.58 and 0.55 in bin 8.
    probs, targets = _two_class([0.9, 0.9, 0.58, 0.55], [True, False, True, True])
    table = reliability(probs, targets)
    assert table.count[13] == 2 and table.count[8] == 2 and sum(table.count) == 4
    assert table.confidence[8] == pytest.approx(0.565) and table.accuracy[13] == 0.5
    expected = 2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(1.0 - 0.565)
    assert ece(probs, targets) == pytest.approx(expected)
    perfect, truth = _two_class([1.0, 1.0], [True, True])
    assert ece(perfect, truth) == pytest.approx(0.0)


def test_risk_coverage_aurc_and_selective_accuracy_by_hand() -> None:
    # Most confident first: wrong, right, right, wrong.
    probs, targets = _two_class([0.9, 0.8, 0.7, 0.6], [False, True, True, False])
    coverage, risk = risk_coverage(probs, targets)
    assert list(coverage) == [0.25, 0.5, 0.75, 1.0]
    assert list(risk) == pytest.approx([1.0, 1 / 2, 1 / 3, 2 / 4])
    assert aurc(probs, targets) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert selective_accuracy(probs, targets, 0.5) == pytest.approx(0.5)
    assert selective_accuracy(probs, targets, 0.75) == pytest.approx(2 / 3)
    assert selective_accuracy(probs, targets, 1.0) == pytest.approx(0.5)


def test_macro_f1_over_present_labels_by_hand() -> None:
    # Targets use labels 0 and 1 of 3; one prediction of the absent label 2.
    probs = np.eye(3)[[0, 0, 1, 2]]
    targets = np.array([0, 1, 1, 1])
    # label 0: precision 1/2, recall 1 -> F1 2/3; label 1: precision 1, recall 1/3 -> F1 1/2
    assert macro_f1(probs, targets) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_distillation_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0])
    soft = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    weights = torch.tensor([1.0, 1.0])
    has_soft = torch.tensor([1.0, 0.0])  # row 2: a human label only
    t, alpha = 2.0, 0.5
    # Row 1: the teacher tempered as p^(1/T) renormalised, KL to the student at T, times T^2.
    teacher = [math.sqrt(0.8), math.sqrt(0.2)]
    teacher = [p / sum(teacher) for p in teacher]
    log_student = [1.0 - math.log(math.e + 1), -math.log(math.e + 1)]  # log_softmax([1, 0])
    kl = sum(p * (math.log(p) - q) for p, q in zip(teacher, log_student, strict=True)) * t**2
    ce = math.log(1 + math.exp(-2.0))  # -log softmax([2, 0])[0]
    rows = [alpha * kl + (1 - alpha) * ce, ce]  # row 2 ignores its (meaningless) soft target
    loss = distillation_loss(logits, labels, soft, weights, has_soft, temperature=t, alpha=alpha)
    assert float(loss) == pytest.approx(sum(rows) / 2, rel=1e-5)
    heavy = torch.tensor([2.0, 1.0])  # a human row weighs twice
    weighted = distillation_loss(logits, labels, soft, heavy, has_soft, temperature=t, alpha=alpha)
    assert float(weighted) == pytest.approx((2 * rows[0] + rows[1]) / 2, rel=1e-5)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=generator) * 3
    true_t = 2.0
    labels = torch.multinomial(torch.softmax(logits / true_t, dim=1), 1, generator=generator)
    fitted = fit_temperature(logits, labels.squeeze(1))
    assert fitted == pytest.approx(true_t, rel=0.08)
    assert fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)) == 1.0


def test_paired_regression_uses_an_exact_one_sided_sign_test() -> None:
    champ = np.ones(43, dtype=bool)
    five_lost = champ.copy()
    five_lost[:5] = False
    result = _paired_regression("hard", champ, five_lost, 0.02, "champion v1")
    p = binomtest(5, 5, 0.5, alternative="greater").pvalue
    assert p == pytest.approx(0.5**5)
    assert not result.passed and f"p={p:.3f}" in result.detail
    assert result.value == pytest.approx(-5 / 43, abs=1e-6)
    one_lost = champ.copy()
    one_lost[0] = False
    assert _paired_regression("hard", champ, one_lost, 0.02, "champion v1").passed


def test_near_ties_are_told_apart_from_decisive_rows() -> None:
    probs = np.array([[0.50, 0.49, 0.01], [0.70, 0.20, 0.10], [0.40, 0.40, 0.20], [0.6, 0.4, 0.0]])
    assert list(_decisive(probs, 0.02)) == [False, True, False, True]
    assert list(_decisive(probs, 0.0)) == [True, True, True, True]
    assert _decisive(None, 0.02).size == 0
