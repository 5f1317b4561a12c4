"""The maths behind the gates and the trainer, against values computed by hand from their
definitions (and scipy where a reference exists)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tutorloop.evaluation.calibration import fit_temperature
from tutorloop.evaluation.intervals import (
    bootstrap,
    noninferiority_verdict,
    paired_difference,
    rows_metric,
    wilson,
)
from tutorloop.evaluation.metrics import (
    aurc,
    ece,
    macro_f1,
    reliability,
    risk_coverage,
    selective_accuracy,
)
from tutorloop.registry.export import _decisive
from tutorloop.registry.gate_rules import floor, non_inferior
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


def test_macro_f1_counts_a_label_the_model_lacks_as_an_error() -> None:
    # Target -1: the row's label is not in the model's label set (a teacher that never saw
    # it). It adds no class, and its prediction (label 0) counts against label 0's precision.
    probs = np.eye(2)[[0, 0, 1]]
    targets = np.array([0, -1, 1])
    # label 0: precision 1/2, recall 1 -> F1 2/3; label 1: F1 1
    assert macro_f1(probs, targets) == pytest.approx((2 / 3 + 1) / 2)


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
    fitted = fit_temperature(logits.numpy(), labels.squeeze(1).numpy())
    assert fitted == pytest.approx(true_t, rel=0.08)
    # The minimum it finds is the minimum of the NLL (checked on a grid around it).
    nll = [
        torch.nn.functional.cross_entropy(logits / t, labels.squeeze(1)).item()
        for t in (fitted * 0.97, fitted, fitted * 1.03)
    ]
    assert nll[1] <= min(nll[0], nll[2])
    assert fit_temperature(np.zeros((0, 5)), np.zeros(0, dtype=int)) == 1.0
    # Every row right: no evidence to calibrate with, not "infinitely sharp".
    separable = np.array([[3.0, 0.0], [0.0, 2.0], [4.0, 1.0]])
    assert fit_temperature(separable, np.array([0, 1, 0])) == 1.0


def _paired(n: int, lost: int, won: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference right everywhere but on ``won`` rows; candidate loses ``lost`` of the others."""
    ref = np.ones(n, dtype=bool)
    ref[:won] = False
    cand = ~ref.copy()
    cand[won:] = True
    cand[won : won + lost] = False
    return ref, cand


def test_a_nine_point_loss_on_43_hard_cases_fails_non_inferiority() -> None:
    # The defect: lost 4 of 43, won none (-9.3 points, 2-point margin) passed a sign test at
    # p = 0.0625. It is more than the margin worse and shown worse than the champion.
    ref, cand = _paired(43, lost=4, won=0)
    comparison = paired_difference(ref, cand)
    assert (comparison.lost, comparison.won) == (4, 0)
    assert comparison.delta == pytest.approx(-4 / 43)
    assert comparison.upper < 0
    assert noninferiority_verdict(comparison, 0.02) == "fail"
    gate = non_inferior("hard_cases_vs_champion", comparison, 0.02, "champion.x", min_n=30,
                        on_insufficient="warn", detail="champion v1")  # fmt: skip
    assert gate.verdict == "fail" and not gate.passed
    # Too few rows never turns a shown loss into a pass.
    small = non_inferior("h", comparison, 0.02, "c", min_n=100, on_insufficient="warn", detail="")
    assert small.verdict == "fail" and not small.passed


def test_a_four_point_gain_with_one_lost_case_passes() -> None:
    # Gold set: +4.4 points on 428 rows (won 20, lost 1): non-inferiority shown.
    gold = paired_difference(*_paired(428, lost=1, won=20))
    assert gold.lower > -0.01 and noninferiority_verdict(gold, 0.01) == "pass"
    # Hard cases: one lost of 43 (-2.3 points) cannot show a loss: insufficient, which warns.
    hard = paired_difference(*_paired(43, lost=1, won=0))
    assert hard.upper == 0 and noninferiority_verdict(hard, 0.02) == "insufficient"
    gate = non_inferior("h", hard, 0.02, "c", min_n=30, on_insufficient="warn", detail="")
    assert gate.verdict == "insufficient" and gate.passed
    blocking = non_inferior("h", hard, 0.02, "c", min_n=30, on_insufficient="block", detail="")
    assert not blocking.passed
    # +4 points on 50 rows with one lost case (won 3): not a regression either way.
    small = paired_difference(*_paired(50, lost=1, won=3))
    assert small.delta == pytest.approx(0.04)
    assert noninferiority_verdict(small, 0.02) in {"pass", "insufficient"}


def test_paired_bootstrap_bounds_agree_with_the_normal_approximation_on_many_rows() -> None:
    # Wald interval of a paired difference (McNemar's variance): a reference for large n.
    n, lost, won = 2000, 60, 90
    comparison = paired_difference(*_paired(n, lost=lost, won=won))
    delta = (won - lost) / n
    se = math.sqrt(((won + lost) / n - delta**2) / n)
    assert comparison.lower == pytest.approx(delta - 1.6449 * se, abs=0.003)
    assert comparison.upper == pytest.approx(delta + 1.6449 * se, abs=0.003)


def test_wilson_interval_by_hand() -> None:
    k, n, z = 1, 6, 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    interval = wilson(k, n)
    assert interval.lower == pytest.approx(centre - half, abs=1e-6)
    assert interval.upper == pytest.approx(centre + half, abs=1e-6)
    assert wilson(0, 0).n == 0 and wilson(0, 0).lower is None


def test_an_oos_floor_on_six_rows_is_insufficient_not_a_verdict() -> None:
    # The defect: 1 of 6 out-of-scope rows (0.17) blocked a better candidate, 3 of 6 passed.
    for hits in (1, 3):
        gate = floor("oos_recall", wilson(hits, 6), 0.5, ">=", "quality.min_oos_recall",
                     min_n=30, on_insufficient="warn")  # fmt: skip
        assert gate.verdict == "insufficient" and gate.passed and gate.n == 6
        assert gate.lower is not None and gate.lower < 0.5 < gate.upper  # type: ignore[operator]
    enough = floor("oos_recall", wilson(10, 40), 0.5, ">=", "q", min_n=30, on_insufficient="warn")
    assert enough.verdict == "fail" and not enough.passed


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=300)
    targets = rng.integers(0, 4, 300)
    first = bootstrap(rows_metric(ece, probs, targets), 300)
    assert first.lower is not None and first.upper is not None
    assert first.lower <= first.value <= first.upper
    assert bootstrap(rows_metric(ece, probs, targets), 300) == first


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    for _ in range(30):
        k, n = int(rng.integers(2, 9)), int(rng.integers(1, 80))
        probs, targets = rng.random((n, k)), rng.integers(0, k, n)
        reference = f1_score(targets, probs.argmax(axis=1), labels=np.unique(targets),
                             average="macro", zero_division=0)  # fmt: skip
        assert macro_f1(probs, targets) == pytest.approx(reference, abs=1e-12)


def test_near_ties_are_told_apart_from_decisive_rows() -> None:
    probs = np.array([[0.50, 0.49, 0.01], [0.70, 0.20, 0.10], [0.40, 0.40, 0.20], [0.6, 0.4, 0.0]])
    assert list(_decisive(probs, 0.02)) == [False, True, False, True]
    assert list(_decisive(probs, 0.0)) == [True, True, True, True]
    assert _decisive(None, 0.02).size == 0
