"""The lifetime privacy ledger: every DP run that sampled a user composes into their epsilon;
a run that would take a user past the contract's ceiling leaves them out and still trains."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_trainer import TEST, TRAIN, _promote, tiny_env, tiny_settings
from tests.warehouse_cases import capture
from tutorloop.infra.hashing import subject_hash
from tutorloop.infra.settings_sections import PrivacySettings
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.loop.cycle import bootstrap, run_cycle, sample_per_label
from tutorloop.privacy.dp import LedgerEntry, record_entry
from tutorloop.privacy.dp_plan import plan
from tutorloop.privacy.lifetime import RunSpend, compose
from tutorloop.registry.contract import PrivacyClause, contract_path, default_contract
from tutorloop.registry.contract_file import write_contract
from tutorloop.registry.store import get
from tutorloop.registry.version_privacy import user_epsilon


def _planned(rows: int, epsilon: float, run_id: str = "r", k: int = 1) -> RunSpend:
    p = plan(rows, PrivacySettings(dp_epsilon=epsilon))
    return RunSpend(run_id, None, k, p.epsilon, p.delta, p.noise_multiplier, p.sample_rate, p.steps)


def test_one_run_composes_to_its_own_epsilon_and_many_compose_below_their_sum() -> None:
    for adapters in (False, True):
        privacy = PrivacySettings(dp_epsilon=2.0, dp_adapters=adapters)
        p = plan(1500, privacy)
        run = RunSpend("r", None, 1, p.epsilon, p.delta, p.noise_multiplier, p.sample_rate, p.steps)
        once = compose([run])
        # Recomputed from the mechanism alone, one run spends what it was planned to spend.
        assert once.epsilon == pytest.approx(2.0, rel=0.05)
        ten = compose([replace(run, run_id=str(i)) for i in range(10)])
        assert ten.method == "rdp" and 2.0 < ten.epsilon < 0.8 * 10 * 2.0
    # A user with many rows per run: the sum of group-privacy epsilons holds only at a delta
    # far above the runs' (here near 1), so the lifetime is RDP's group bound, at their delta.
    for adapters in (False, True):
        privacy = PrivacySettings(dp_epsilon=2.0, dp_adapters=adapters)
        p = plan(1500, privacy)
        run = RunSpend("r", None, 8, p.epsilon, p.delta, p.noise_multiplier, p.sample_rate, p.steps)
        heavy = compose([replace(run, run_id=str(i)) for i in range(3)])
        light = compose([replace(run, run_id=str(i), rows=1) for i in range(3)])
        assert heavy.method == "rdp" and heavy.delta == p.delta
        assert heavy.epsilon > 2 * light.epsilon


@pytest.mark.timeout(900)
def test_a_user_the_sixth_weekly_run_would_take_past_the_ceiling_is_left_out(
    tmp_path: Path,
) -> None:
    settings = tiny_settings(
        tmp_path / "d",
        privacy={"dp_epsilon": 1.0, "epsilon_budget": 1000.0},
        teacher={"backend": "human"},
    )
    warehouse = open_warehouse(settings)
    seed = sample_per_label(read_labeled_csv(TRAIN), 20, 0)
    first = bootstrap(settings, warehouse, seed, source="seed", actor="test")
    assert first.version is not None
    _promote(warehouse, first.version)
    test = read_labeled_csv(TEST)
    users = ["heavy"] * 12 + [f"u-{i}" for i in range(108)]
    capture(
        warehouse, test.texts[:120], users=users, human_labels=dict(enumerate(test.labels[:120]))
    )
    # Five earlier weekly DP runs sampled the heavy user's three rows.
    weekly = _planned(120, 1.0)
    for week in range(1, 6):
        run_id = f"week-{week}"
        entry = LedgerEntry(
            run_id,
            weekly.epsilon,
            weekly.delta,
            weekly.noise_multiplier,
            weekly.sample_rate,
            weekly.steps,
            max_grad_norm=1.0,
            accountant="rdp",
        )
        heavy_rows = {("acme", "heavy"): 3}
        record_entry(warehouse, entry, window_start=None, window_end=None, user_rows=heavy_rows)
    # The ceiling sits between their five runs and those plus one row in a sixth (the dataset's
    # random split puts some of their twelve rows in training).
    past = [replace(weekly, run_id=f"w{i}", rows=3) for i in range(5)]
    five = compose(past).epsilon
    ceiling = (five + compose([*past, replace(weekly, run_id="w6")]).epsilon) / 2
    contract = default_contract(settings).model_copy(
        update={"privacy": PrivacyClause(max_user_epsilon=ceiling)}
    )
    write_contract(contract, contract_path(settings))

    report = run_cycle(settings, warehouse)

    assert report.dp_users_left_out == 1 and report.version is not None  # it still trained
    sampled = warehouse.query(
        "SELECT tenant_id, subject, n_rows FROM privacy_user_rows WHERE run_id = ?",
        [report.run_id],
    )
    assert sampled and ("acme", subject_hash("heavy")) not in {(t, s) for t, s, _ in sampled}
    version = get(warehouse, report.version)
    assert version.card["privacy"]["lifetime"] == {"lifetime_ceiling": ceiling, "users_left_out": 1}
    gate_epsilon = user_epsilon(warehouse, version, per_user=50)
    assert gate_epsilon is not None and 0 < gate_epsilon <= ceiling

    env = tiny_env(tmp_path / "d")
    heavy = run_cli("privacy", "ledger", "--user", "heavy", "--tenant", "acme", "--json", env=env)
    assert heavy.returncode == 0, heavy.stderr
    spent = json.loads(heavy.stdout)["lifetime"]
    assert [r["run_id"] for r in spent["runs"]] == [f"week-{w}" for w in range(1, 6)]
    assert spent["epsilon"] == pytest.approx(five) and spent["epsilon"] <= ceiling
    names = {subject_hash(user): user for user in users}
    ordinary = names[sorted(str(s) for _, s, _ in sampled)[0]]
    theirs = run_cli("privacy", "ledger", "--user", ordinary, "--tenant", "acme", "--json", env=env)
    assert theirs.returncode == 0, theirs.stderr
    lifetime = json.loads(theirs.stdout)["lifetime"]
    [only] = lifetime["runs"]
    assert only["run_id"] == report.run_id and only["versions"] == [report.version]
    # The run's mechanism, as the ledger recorded it, recomputes to the epsilon it spent.
    assert lifetime["epsilon"] == pytest.approx(only["epsilon"], rel=0.05)
    runs = run_cli("privacy", "ledger", "--json", env=env)
    assert runs.returncode == 0, runs.stderr
    newest = json.loads(runs.stdout)["runs"][0]
    assert newest["run_id"] == report.run_id and newest["versions"] == [report.version]
    assert newest["users"] == len(sampled)
