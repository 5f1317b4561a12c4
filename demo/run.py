"""`tutorloop demo`: the whole loop on one machine, from a labeled CSV, with a report.

1. the embedded broker and a stream worker start;
2. a seed student is trained from ``seed_per_label`` gold examples per label;
3. the reference teacher is fit on a labeled pool disjoint from the traffic;
4. the rest of the rows are production traffic: served over HTTP by the champion, emitted to
   Kafka, captured/scrubbed by the worker; a fraction is escalated with its true label;
5. each week of a simulated clock, the scheduler runs a cycle: relabel → dataset → QLoRA
   retrain → export → gates → promote (or reject);
6. every champion is evaluated on the held-out test file (with ``--holdout-intents``, also on
   the intents left out of every stage, as out of scope: :mod:`tutorloop.demo.holdout`).

Everything started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tutorloop.demo.holdout import OpenSetResult, score_open_set, unknown_intents, without
from tutorloop.demo.report import write_report
from tutorloop.demo.results import CycleRow, DemoOptions, DemoResult
from tutorloop.demo.reviewer import agreement_rows, review_spot_checks
from tutorloop.demo.traffic import serve_traffic, wait_for_warehouse
from tutorloop.evaluation.classifier import evaluate
from tutorloop.infra.broker import EmbeddedBroker
from tutorloop.infra.cli_common import console
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.local_processes import free_port
from tutorloop.infra.progress import progress_bar
from tutorloop.infra.settings import Settings, flatten, load_settings
from tutorloop.infra.topics import ensure_topics
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.labeling.case_store import labeling_counts
from tutorloop.labeling.gold import import_gold
from tutorloop.labeling.labeled_csv import LabeledRows, read_labeled_csv
from tutorloop.labeling.teacher_local import LocalTeacher, fit_local_teacher
from tutorloop.loop.cycle import CycleReport, bootstrap, run_cycle
from tutorloop.loop.schedule import Scheduler
from tutorloop.privacy.dp import BudgetExceededError, total_epsilon
from tutorloop.privacy.dp_plan import DPWontLearnError
from tutorloop.privacy.scrubber import RegexScrubber
from tutorloop.registry.contract import load_contract
from tutorloop.registry.gates import stored_gates
from tutorloop.registry.lifecycle import history, promote
from tutorloop.registry.onnx_model import load_onnx_student
from tutorloop.registry.store import champion, get

START = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)  # a Monday, an hour after the weekly window


def _overrides(options: DemoOptions, bootstrap: str) -> dict[str, Any]:
    quick = options.quick
    encoder = "all-minilm-l6-v2" if quick else "all-mpnet-base-v2"
    return {
        "data_dir": str(options.out / "data"),
        "broker": {"bootstrap_servers": bootstrap},
        "privacy": {"scrubber": "regex" if quick else "presidio", **_dp(options)},
        "teacher": {"backend": "local", "encoder": encoder},
        # The full demo trains with the trainer's defaults; the quick one with fewer epochs.
        "trainer": {"epochs": 1, "bootstrap_epochs": 4} if quick else {},
        "streams": {"batch_within_s": 0.3, "session_timeout_s": 6, "heartbeat_interval_s": 1},
    }  # fmt: skip


def _dp(options: DemoOptions) -> dict[str, Any]:
    """``--dp-epsilon`` is what the whole demo may spend: the privacy budget, split evenly
    over its weekly retrains (the seed student trains on public rows and spends nothing).
    One captured case per user and week keeps a user's guarantee at the run's example-level
    epsilon (k = 1)."""
    if not options.dp_epsilon:
        return {}
    return {"dp_epsilon": options.dp_epsilon / options.cycles, "max_cases_per_user": 1,
            "epsilon_budget": options.dp_epsilon}  # fmt: skip


def _env(overrides: dict[str, Any]) -> dict[str, str]:

    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")}
    for key, value in flatten(overrides):
        if value is None:
            continue
        name = "TUTORLOOP_" + key.upper().replace(".", "__")
        env[name] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    return env


def _split(rows: Any, options: DemoOptions) -> dict[str, Any]:

    rng = random.Random(options.seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    seed_idx: list[int] = []
    eval_idx: list[int] = []
    per_seed: dict[str, int] = {}
    per_eval: dict[str, int] = {}
    rest: list[int] = []
    for i in order:
        label = rows.labels[i]
        if per_seed.get(label, 0) < options.seed_per_label:
            per_seed[label] = per_seed.get(label, 0) + 1
            seed_idx.append(i)
        elif per_eval.get(label, 0) < options.eval_per_label:
            per_eval[label] = per_eval.get(label, 0) + 1
            eval_idx.append(i)
        else:
            rest.append(i)
    # A small file still leaves half of what remains for traffic.
    pool_size = min(options.pool, len(rest) // 2)
    pool_idx, traffic_idx = rest[:pool_size], rest[pool_size:]
    if options.traffic is not None:
        traffic_idx = traffic_idx[: options.traffic]

    def take(idx: list[int]) -> LabeledRows:
        return LabeledRows([rows.texts[i] for i in idx], [rows.labels[i] for i in idx])

    return {"seed": take(seed_idx), "eval": take(eval_idx), "pool": take(pool_idx),
            "traffic": take(traffic_idx)}  # fmt: skip


def _evaluate(settings: Settings, test: Any) -> tuple[Any, Any, Any, float | None]:

    current = champion(open_warehouse(settings))
    assert current is not None
    model = load_onnx_student(current.artifact_dir, retrieval=settings.serving.retrieval)
    q, probs, targets = evaluate(model, test.texts, test.labels)
    without = None
    if model.memory is not None:  # the same champion without its retrieval memory: ablation
        plain = replace(model, memory=None).predict_proba(test.texts)
        without = float(np.mean(plain.argmax(axis=1) == targets))
    return current, q, (probs, targets), without


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM both end the demo through its cleanup (``finally``), also when the
    shell started it with SIGINT ignored (a background job)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)


@dataclass
class _Services:
    settings: Settings
    warehouse: Any


@contextmanager
def _services(options: DemoOptions) -> Iterator[_Services]:
    """The embedded broker and one stream worker, stopped on the way out (Ctrl-C included)."""

    data_dir = options.out / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    broker = EmbeddedBroker(load_settings(data_dir=data_dir, broker={"port": free_port()}))
    worker: subprocess.Popen[bytes] | None = None
    log = None
    try:
        console.rule("1. broker and stream worker")
        state = broker.up()
        overrides = _overrides(options, state.bootstrap_servers)
        settings = load_settings(**overrides)
        ensure_topics(settings, state.bootstrap_servers)
        log = (options.out / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tutorloop", "streams", "worker"],
            env=_env(overrides), stdout=log, stderr=log,
        )  # fmt: skip
        contract = load_contract(settings)
        console.print(f"gates: {contract.ref} ({contract.source}); int8 must agree with fp32 "
                      f"on {contract.parity.min_agreement:g} of decisive rows",
                      markup=False)  # fmt: skip
        console.print(f"broker at {state.bootstrap_servers}; worker pid {worker.pid} "
                      f"(log: {options.out / 'worker.log'})")  # fmt: skip
        yield _Services(settings, open_warehouse(settings))
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if log is not None:
            log.close()
        broker.down()


def _seed_student(run: _Services, parts: dict[str, Any], test: Any, result: DemoResult) -> None:

    settings, warehouse = run.settings, run.warehouse
    console.rule(f"2. seed student ({len(parts['seed'])} gold examples)")
    import_gold(warehouse, parts["eval"], RegexScrubber(), source="demo-eval", actor="demo",
                for_eval=True)  # fmt: skip
    first = bootstrap(settings, warehouse, parts["seed"], source="demo-seed", actor="demo",
                      progress=progress_bar)  # fmt: skip
    note = ""
    if first.gates and not first.gates["promoted"]:
        assert first.version is not None
        promote(warehouse, settings, first.version, actor="demo", force=True,
                reason="demo: the seed student serves even if it misses a gate")  # fmt: skip
        note = "seed forced: failed " + ", ".join(first.gates["failed"])
    current, q, _, without = _evaluate(settings, test)
    result.seed_accuracy = q.accuracy
    result.rows.append(_row(0, current.version, first, True, q, warehouse, 0, 0, note))
    result.rows[-1].accuracy_without_memory = without


def _reference_teacher(settings: Settings, pool: Any, test: Any, result: DemoResult) -> None:

    console.rule(f"3. reference teacher ({settings.teacher.encoder}, {len(pool)} pool)")
    with progress_bar("embedding teacher pool", len(pool)) as advance:
        fit_local_teacher(pool, settings.teacher_path, encoder=settings.teacher.encoder,
                          models_dir=settings.models_dir, knn_weight=settings.teacher.knn_weight,
                          on_batch=advance)  # fmt: skip
    teacher = LocalTeacher(settings.teacher_path, settings.models_dir)
    with progress_bar("teacher on the test file", len(test)) as advance:
        tq, _ = teacher.evaluate(test, on_batch=advance)
    result.teacher_accuracy = tq.accuracy
    console.print(
        f"teacher test accuracy {tq.accuracy:.4f} (seed student {result.seed_accuracy:.4f})"
    )


def _weekly_cycles(
    run: _Services, options: DemoOptions, traffic_rows: Any, test: Any, result: DemoResult
) -> None:
    """Each week: serve a share of the traffic, then let the scheduler run that week's cycle."""

    settings, warehouse = run.settings, run.warehouse
    chunks = np.array_split(np.arange(len(traffic_rows)), options.cycles)
    rng = random.Random(options.seed + 1)
    served = 0
    truth: dict[str, str] = {}
    reports: list[CycleReport] = []

    def cycle_fn(check_stop: Any) -> CycleReport:
        try:
            reports.append(run_cycle(settings, warehouse, progress=progress_bar))
        except (BudgetExceededError, DPWontLearnError) as exc:
            # A privacy refusal is the loop working: the week is reported, not trained.
            reason = str(exc).split(";")[0]
            console.print(f"[yellow]week not trained:[/] {reason}")
            reports.append(CycleReport(gates={"promoted": False, "rejected_reason": reason}))
        return reports[-1]

    clock = [START]
    scheduler = Scheduler(settings, cycle=cycle_fn, clock=lambda: clock[0])
    scheduler.mark_installed()  # week 0 is the seed student's
    for cycle, chunk in enumerate(chunks, start=1):
        console.rule(f"4.{cycle} week {cycle}: {len(chunk)} production queries")
        traffic = LabeledRows([traffic_rows.texts[i] for i in chunk],
                              [traffic_rows.labels[i] for i in chunk])  # fmt: skip
        week = serve_traffic(settings, traffic, options.escalate, rng)
        escalated = week.escalated
        truth.update(week.truth)
        served += len(chunk)
        wait_for_warehouse(settings, served)
        console.print(f"served {len(chunk)}, escalated {escalated}; stored by the worker; "
                      f"{week.with_text / max(1, week.served):.0%} of prediction events "
                      "carried their text")  # fmt: skip

        console.rule(f"5.{cycle} weekly retrain (simulated clock: week {cycle})")
        clock[0] = START + timedelta(weeks=cycle)
        before = len(reports)
        outcome = scheduler.run_once()
        report = reports[-1] if len(reports) > before else None
        if outcome is None or report is None:
            raise TutorloopError(f"the scheduler did not run week {cycle}: {outcome}")
        if outcome["status"] != "succeeded":
            raise TutorloopError(f"week {cycle} failed: {outcome.get('error')}")
        promoted = bool(report.gates and report.gates["promoted"])
        note = "" if promoted else "not promoted: " + (
            (report.gates or {}).get("rejected_reason") or
            ", ".join((report.gates or {}).get("failed", []))
        )  # fmt: skip
        reviewed = review_spot_checks(warehouse, truth)
        result.spot_checks_resolved += reviewed
        console.print(f"reviewers resolved {reviewed} spot checks (they train from next week)")
        current, q, (result.probs, result.targets), without = _evaluate(settings, test)
        result.rows.append(_row(cycle, current.version, report, promoted, q, warehouse,
                                served, escalated, note))  # fmt: skip
        result.rows[-1].accuracy_without_memory = without


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the whole loop (module docstring) and write its report."""

    started = time.monotonic()
    result = DemoResult()
    _interrupt_on_signals()
    rows = read_labeled_csv(options.data, options.text_col, options.label_col)
    test = read_labeled_csv(options.test, options.text_col, options.label_col)
    unknown = unknown_intents(rows.labels, options.holdout_intents, options.seed)
    result.unknown_intents = sorted(unknown)
    rows, out_of_scope = (
        without(rows, unknown),
        [t for t, label in zip(test.texts, test.labels, strict=True) if label in unknown],
    )
    test = without(test, unknown)
    parts = _split(rows, options)
    if len(parts["traffic"]) < options.cycles:
        raise TutorloopError("not enough rows left for traffic: lower --seed-per-label or the pool")
    with _services(options) as run:
        _seed_student(run, parts, test, result)
        _reference_teacher(run.settings, parts["pool"], test, result)
        _weekly_cycles(run, options, parts["traffic"], test, result)
        gap = result.teacher_accuracy - result.seed_accuracy
        if gap > 0:
            result.gap_closed = (result.rows[-1].accuracy - result.seed_accuracy) / gap
        if out_of_scope:
            _score_open_set(run, result, test, out_of_scope)
        result.history = [c.to_dict() for c in history(run.warehouse)]
        result.spot_checks = agreement_rows(run.warehouse)
        result.drift = run.warehouse.query_dicts(
            "SELECT window_end, model_version, requests, mean_confidence, abstention_rate,"
            " confidence_psi, confidence_psi_null, label_psi, label_psi_null, confidence_ks_p,"
            " breached FROM drift_windows ORDER BY window_end"
        )
    result.seconds = round(time.monotonic() - started, 1)
    result.report = write_report(result, options)
    return result


def _score_open_set(run: _Services, result: DemoResult, known: Any, oos: list[str]) -> None:
    """Each week's champion on the in-scope and the held-out (out-of-scope) test rows."""
    scored: dict[str, OpenSetResult] = {}
    for row in result.rows:
        if row.champion not in scored:
            model = load_onnx_student(
                get(run.warehouse, row.champion).artifact_dir,
                retrieval=run.settings.serving.retrieval,
            )
            scored[row.champion] = score_open_set(
                model, known, oos, run.settings.serving.abstain_below
            )
        row.open_set = scored[row.champion]


def _row(
    cycle: int, champion: str, report: Any, promoted: bool, q: Any, warehouse: Any,
    served: int, escalated: int, note: str,
) -> CycleRow:  # fmt: skip

    by_source = (report.dataset_counts or {}).get("by_source", {})
    human = int(by_source.get("human", 0)) + int(by_source.get("human+teacher", 0))
    teacher = int(by_source.get("teacher", 0))
    counts = labeling_counts(warehouse)
    p95 = [g.value for g in stored_gates(warehouse, champion) if g.gate == "p95_latency_ms"]
    if report.dp_plan:  # the point of the utility-privacy curve this retrain ran at
        plan = report.dp_plan
        if plan.get("method") == "head":
            learns = "" if plan["can_learn"] else " (too noisy)"
            what = f"head-only, noise {plan['noise']:.4f}{learns}"
        else:
            learns = "" if plan["can_learn"] else " (low)"
            what = f"signal {plan['signal']:.0f}{learns}"
        note += (
            f"{'; ' if note else ''}DP: eps {plan['epsilon']:g} over {plan['rows']} private "
            f"rows, sigma {plan['noise_multiplier']:.2f}, {plan['steps']} steps, {what}"
        )
    return CycleRow(
        cycle=cycle, champion=champion, candidate=report.version, promoted=promoted,
        accuracy=q.accuracy, macro_f1=q.macro_f1, ece=q.ece, aurc=q.aurc,
        selective_accuracy=q.selective_accuracy, p95_ms=p95[0] if p95 else None,
        labels_human=human, labels_teacher=teacher, labels_total=human + teacher,
        labels_acquired=counts["labeled"], teacher_calls=counts["teacher_calls"],
        epsilon=total_epsilon(warehouse), captured=counts["captured"],
        served=served, note=note,
    )  # fmt: skip
