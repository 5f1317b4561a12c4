"""Drift of the live prediction stream: PSI and KS against the champion's reference window, a
breach only beyond what chance reaches, windows in the warehouse and /metrics, `tutorloop
monitor`, and the scheduler's drift trigger."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli
from tests.registry_fixtures import first_version, registry_settings
from tests.test_trainer import TEST
from tutorloop.labeling.labeled_csv import read_labeled_csv
from tutorloop.loop.schedule import Scheduler
from tutorloop.serving.drift import DriftMonitor
from tutorloop.serving.server import serving


def test_a_breach_needs_more_than_chance() -> None:
    rng = np.random.default_rng(1)
    labels = [f"intent-{i}" for i in range(77)]
    usual = rng.dirichlet(np.ones(77) * 5)
    monitor = DriftMonitor(reference_size=1000, min_window=200, psi_max=0.2)

    def window(n: int, probs: np.ndarray, a: float, b: float) -> dict[str, object] | None:
        for _ in range(n):
            confidence = float(rng.beta(a, b))
            monitor.record("v1", str(rng.choice(labels, p=probs)), confidence, confidence < 0.5)
        return monitor.take_window()

    assert window(1000, usual, 5, 2) is None  # the reference fills first
    same = window(200, usual, 5, 2)
    assert same is not None and not same["breached"]
    # Chance alone puts two samples of one stream over the textbook 0.2 with 77 labels.
    assert same["label_psi"] > 0.2  # type: ignore[operator]
    assert same["label_psi"] < same["label_psi_null"]  # type: ignore[operator]
    moved = usual.copy()
    moved[:5] += 0.5  # five intents take half the traffic
    moved /= moved.sum()
    shifted = window(200, moved, 5, 2)
    assert shifted is not None and shifted["breached"]
    assert shifted["label_psi"] > shifted["label_psi_null"]  # type: ignore[operator]
    unsure = window(200, usual, 2, 5)  # same intents, far less confident
    assert unsure is not None and unsure["breached"] and unsure["confidence_ks_p"] < 1e-6  # type: ignore[operator]
    small = window(50, moved, 2, 5)  # too few to judge
    assert small is not None and small["confidence_psi"] is None and not small["breached"]
    monitor.record("v2", "intent-1", 0.9, False)  # a new champion: a new reference
    assert monitor.take_window() is None


def test_drift_windows_metrics_monitor_and_the_retrain_trigger(tmp_path: Path) -> None:
    cfg = registry_settings(tmp_path / "data")
    cfg = cfg.model_copy(update={
        "serving": cfg.serving.model_copy(update={
            "window_s": 3600.0, "drift_reference_size": 80, "drift_min_window": 60}),
        "trainer": cfg.trainer.model_copy(update={"trigger_on_drift": True}),
    })  # fmt: skip
    first_version(cfg)
    texts = read_labeled_csv(TEST).texts
    with serving(cfg, port=0) as server, httpx.Client(timeout=10) as client:

        def send(batch: list[str]) -> None:
            for text in batch:
                assert client.post(f"{server.url}/predict", json={"text": text}).status_code == 200

        send(texts[:80])  # the reference
        send(texts[80:160])
        server.live.tick()  # closes the window now (instead of after window_s)
        send(["I still have not received my new card"] * 80)  # one intent, one confidence
        server.live.tick()
        metrics = {f.name: f for f in text_string_to_metric_families(
            client.get(f"{server.url}/metrics").text)}  # fmt: skip
    assert metrics["tutorloop_serving_drift_breach"].samples[0].value == 1
    env = {"TUTORLOOP_DATA_DIR": str(cfg.data_dir)}
    shown = run_cli("monitor", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = sorted(json.loads(shown.stdout), key=lambda r: r["window_end"])
    assert [r["requests"] for r in rows] == [80, 80]
    assert [r["breached"] for r in rows] == [False, True]
    assert rows[1]["label_psi"] > max(0.2, rows[1]["label_psi_null"])
    assert "BREACH" in run_cli("monitor", env=env).stdout

    scheduler = Scheduler(cfg)
    scheduler.mark_installed()  # the cron window of installation is not run
    due = scheduler.due()
    assert due is not None and due[1] == "drift"
    off = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(
        update={"trigger_on_drift": False})})  # fmt: skip
    assert Scheduler(off).due() is None
