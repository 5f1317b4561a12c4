"""Shadow and canary releases on a running server: a deliberately worse candidate (its
classifier bias shifted towards one label) is rolled back by the contract's live thresholds; a
good one is promoted after it held; both in `registry history` and the warehouse."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx

from tests.conftest import on_postgres, run_cli, wait_until, warehouse_env
from tests.registry_fixtures import first_version, register_copy, registry_settings
from tests.test_trainer import TEST
from tutorloop.infra.settings import Settings
from tutorloop.infra.warehouse import Warehouse
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.registry.lifecycle import history
from tutorloop.registry.rollout import read_rollout, start_rollout
from tutorloop.registry.store import champion
from tutorloop.serving.server import serving


def _traffic(url: str, texts: list[str], users: int) -> dict[str, list[str]]:
    """Send ``texts``; the versions that answered each user, in order."""
    seen: dict[str, list[str]] = {}
    with httpx.Client(timeout=10) as client:
        for i, text in enumerate(texts):
            user = f"user-{i % users}"
            reply = client.post(f"{url}/predict", json={"text": text, "user_id": user})
            assert reply.status_code == 200, reply.text
            seen.setdefault(user, []).append(reply.json()["model_version"])
    return seen


def _sticky_until_rollback(answers: list[str], canary: str) -> bool:
    """A user's answers came from one version, except canary answers followed by the
    champion's once the canary was rolled back (the rollback may land mid-traffic)."""
    switched = [a for a, b in itertools.pairwise(answers) if a != b]
    return not switched or (switched == [canary] and answers[-1] != canary)


def _champion_with_short_windows(
    tmp_path: Path, backend_url: str | None = None
) -> tuple[Settings, Warehouse]:
    """v1 trained and promoted; live windows of 1 s."""
    cfg = on_postgres(registry_settings(tmp_path / "data"), backend_url)
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(
        update={"window_s": 1.0, "reload_poll_s": 0.1})})  # fmt: skip
    first_version(cfg)
    return cfg, open_warehouse(cfg)


def test_a_worse_canary_is_rolled_back_and_a_good_one_promoted(
    tmp_path: Path, backend_url: str | None
) -> None:
    # Live windows, automatic rollback and promotion on DuckDB and on PostgreSQL.
    cfg, warehouse = _champion_with_short_windows(tmp_path, backend_url)
    texts = read_labeled_csv(TEST).texts
    worse = register_copy(warehouse, cfg, "v1", shift=30.0)
    start_rollout(warehouse, cfg, worse, mode="canary", percent=50, actor="test",
                  reason="test: a worse candidate", force=True)  # fmt: skip
    with serving(cfg, port=0) as server:
        wait_until(lambda: server.predictor.rollout.current is not None, timeout=10)
        seen = _traffic(server.url, texts[:240], users=40)
        wait_until(lambda: read_rollout(cfg) is None, timeout=15, interval=0.2)
        wait_until(lambda: server.predictor.rollout.current is None, timeout=5, interval=0.1)
        after = _traffic(server.url, texts[:20], users=40)
    # Sticky: each user stayed with one version until the rollback; about half got the canary.
    assert all(_sticky_until_rollback(answers, worse) for answers in seen.values()), seen
    canaried = sum(answers[0] == worse for answers in seen.values())
    assert 8 <= canaried <= 32
    assert all(set(answers) == {"v1"} for answers in after.values())
    last = history(warehouse)[-1]
    assert (last.action, last.from_version, last.to_version) == ("rollout_rollback", worse, "v1")
    assert last.reason and "agreement" in last.reason
    assert champion(warehouse).version == "v1"  # type: ignore[union-attr]
    [(outcome, agreement)] = warehouse.query(
        "SELECT r.outcome, min(w.agreement) FROM rollouts r JOIN rollout_windows w"
        " USING (rollout_id) WHERE r.version = ? GROUP BY r.outcome", [worse]
    )  # fmt: skip
    assert outcome == "rolled_back" and agreement < 0.8

    good = register_copy(warehouse, cfg, "v1", shift=0.0)
    start_rollout(warehouse, cfg, good, mode="canary", percent=50, auto_promote_after_s=1.0,
                  actor="test", reason="test: a faithful copy", force=True)  # fmt: skip
    with serving(cfg, port=0) as server:
        wait_until(lambda: server.predictor.rollout.current is not None, timeout=10)
        _traffic(server.url, texts[:240], users=40)
        wait_until(lambda: champion(warehouse).version == good, timeout=15, interval=0.2)  # type: ignore[union-attr]
        wait_until(lambda: server.predictor.version == good, timeout=5, interval=0.1)
    last = history(warehouse)[-1]
    assert (last.action, last.from_version, last.to_version) == ("promote", "v1", good)
    assert last.reason and "held its live thresholds" in last.reason
    env = {"TUTORLOOP_DATA_DIR": str(cfg.data_dir)} | warehouse_env(cfg)
    shown = run_cli("registry", "history", env=env)
    assert shown.returncode == 0 and "rollout_rollback" in shown.stdout, shown.stderr


def test_a_shadow_never_answers_and_its_comparison_is_stored(tmp_path: Path) -> None:
    cfg, warehouse = _champion_with_short_windows(tmp_path)
    shadow = register_copy(warehouse, cfg, "v1", shift=0.0)
    env = {"TUTORLOOP_DATA_DIR": str(cfg.data_dir)}
    started = run_cli("registry", "promote", shadow, "--shadow", "--force", "--reason", "t",
                      env=env)  # fmt: skip
    assert started.returncode == 0, started.stderr
    with serving(cfg, port=0) as server:
        wait_until(lambda: server.predictor.rollout.current is not None, timeout=10)
        seen = _traffic(server.url, read_labeled_csv(TEST).texts[:120], users=30)
        wait_until(lambda: bool(warehouse.query("SELECT 1 FROM rollout_windows")), timeout=10)
    assert all(set(answers) == {"v1"} for answers in seen.values())
    [(requests, answered, agreement)] = warehouse.query(
        "SELECT sum(requests), sum(challenger_answered), min(agreement) FROM rollout_windows"
    )
    assert requests == 120 and answered == 0 and agreement == 1.0
    status = run_cli("registry", "canary", "status", env=env)
    assert status.returncode == 0 and f"shadow of {shadow}" in status.stdout
    aborted = run_cli("registry", "canary", "abort", "--reason", "enough", env=env)
    assert aborted.returncode == 0 and read_rollout(cfg) is None
    assert history(warehouse)[-1].action == "rollout_abort"
