"""Gates: what a candidate's int8 artifact must show before it may serve, derived from the
model contract (:mod:`tutorloop.registry.contract`).

Each gate reports its value, n, a 95% interval (Wilson for proportions, bootstrap for
macro-F1, ECE, selective accuracy and AURC), the threshold, the contract clause and a verdict
in {pass, fail, insufficient} (:mod:`tutorloop.registry.gate_rules`). The gates:

- the label set (``task.labels``), int8/fp32 argmax agreement on decisive rows and int8
  accuracy non-inferior to the fp32 network (``parity``);
- quality floors on the gold evaluation set (``quality``), out-of-scope recall and precision
  when the task has an OOS label;
- against the champion, paired non-inferiority on the same rows (``champion``): accuracy and
  macro-F1 on the gold set, accuracy on recent hard cases (evaluation cases captured for low
  confidence, low margin, escalation or a watched label in the last ``hard_cases_days``). A
  champion that cannot be loaded fails closed (``champion_unavailable``);
- serving constraints of a fresh process (``serving``): p95 single-query latency, peak RSS,
  artifact size, cost per 1,000 requests; the user-level DP guarantee (``privacy``).

Results are stored in ``gate_results`` with the contract's hash and the evaluation set's hash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.intervals import (
    Interval,
    bootstrap,
    paired_difference,
    paired_metric_difference,
    rows_metric,
    wilson,
)
from tutorloop.evaluation.metrics import (
    aurc,
    ece,
    macro_f1,
    selective_accuracy,
    single_query_latencies_ms,
)
from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.tables import GateVerdict as Verdict
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.contract import Contract
from tutorloop.registry.gate_artifact import label_set_gates, open_set_gates
from tutorloop.registry.gate_rules import (
    GateResult,
    blocked,
    constraint,
    floor,
    non_inferior,
)
from tutorloop.registry.onnx_model import OnnxStudent, load_onnx_student
from tutorloop.registry.store import ModelVersion

if TYPE_CHECKING:  # export imports torch; promote and rollback must start fast
    from tutorloop.registry.export import ExportResult
    from tutorloop.registry.version_rows import EvaluationSet

__all__ = ["GateContext", "GateResult", "evaluate_gates", "stored_gates"]

_HARD_REASONS = (
    CaptureReason.LOW_CONFIDENCE,
    CaptureReason.LOW_MARGIN,
    CaptureReason.ESCALATED,
    CaptureReason.WATCHED_LABEL,
)


def _latencies_ms(model: OnnxStudent, texts: list[str], n: int = 200) -> list[float]:
    sample = (texts or ["how do I reset my card pin?"]) * (n // max(1, len(texts)) + 1)
    return list(single_query_latencies_ms(model.predict_proba, sample[:n]))


_RSS_PROBE = """
import json, resource, sys
from pathlib import Path
from tutorloop.registry.onnx_model import load_onnx_student
model = load_onnx_student(Path(sys.argv[1]), threads=int(sys.argv[2]), verified=True,
                          retrieval=sys.argv[4] == "1")
texts = json.loads(sys.argv[3]) or ["how do I reset my card pin?"]
for i in range(100):
    model.predict_proba([texts[i % len(texts)]])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large process
# would report its parent's peak.
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
        break
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _serving_rss_mb(version: ModelVersion, texts: list[str], ctx: GateContext) -> float:
    """Peak RSS of a fresh process that loads the int8 model and answers 100 queries."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(version.artifact_dir), str(ctx.threads),
         json.dumps(texts[:50]), "1" if ctx.retrieval else "0"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _hard_case_ids(warehouse: Warehouse, dataset_hash: str | None, days: float) -> set[str]:
    """The evaluation cases of the dataset captured as hard in the last ``days``."""
    if dataset_hash is None:
        return set()
    since = datetime.now(UTC) - timedelta(days=days)
    rows = warehouse.query(
        "SELECT m.case_id FROM dataset_members m JOIN cases c USING (case_id)"
        " WHERE m.dataset_hash = ? AND m.split = 'eval' AND c.ts >= ?"
        " AND c.capture_reason IN (SELECT unnest(?)) ORDER BY m.case_id",
        [dataset_hash, since, list(_HARD_REASONS)],
    )
    return {str(case_id) for (case_id,) in rows}


class _Soft(TypedDict):
    min_n: int
    on_insufficient: str


@dataclass(frozen=True)
class GateContext:
    """What the gates judge a candidate on, and under which contract."""

    contract: Contract
    rows: EvaluationSet
    threads: int = 1
    user_epsilon: float | None = None  # the run's user-level DP epsilon, if it trained with DP
    retrieval: bool = False  # judge it as served with its retrieval memory (serving.retrieval)

    @property
    def on_insufficient(self) -> str:
        return self.contract.evaluation.on_insufficient


def evaluate_gates(
    warehouse: Warehouse,
    ctx: GateContext,
    candidate: ModelVersion,
    export: ExportResult,
    champion: ModelVersion | None,
) -> list[GateResult]:
    """Evaluate every gate of the contract on the candidate's int8 artifact; store them."""
    model = load_onnx_student(candidate.artifact_dir, threads=ctx.threads, retrieval=ctx.retrieval)
    c = ctx.contract
    results = [*label_set_gates(c, model.labels), *_parity(ctx, export, model.labels)]
    results.append(
        constraint("artifact_mb", export.int8_mb, c.serving.max_artifact_mb, "<=",
                   "serving.max_artifact_mb")
    )  # fmt: skip
    results += open_set_gates(c, model)
    scope = c.fallback.open_set and model.open_set is not None
    if ctx.rows.gold:
        probs, unknown = model.predict_with_scope(ctx.rows.texts, scope=scope)
        targets = label_targets(model.labels, ctx.rows.truth)
        results += _quality(ctx, probs, targets, model.labels, unknown)
        if champion is not None:
            results += _versus_champion(warehouse, ctx, candidate, champion, probs, targets)
    else:
        results.append(blocked(
            "accuracy", "quality.min_accuracy",
            "no gold evaluation rows: import some (dataset import --eval); validation rows "
            "were used for early stopping and calibration, so they are no evidence", n=0,
        ))  # fmt: skip
    results += _serving(ctx, candidate, model)
    results += _privacy(ctx)
    _store(warehouse, candidate.version, results, c.digest, ctx.rows.digest)
    return results


def _parity(ctx: GateContext, export: ExportResult, labels: list[str]) -> list[GateResult]:
    p = ctx.contract.parity
    decisive = export.n_parity - export.n_ties
    agree = round(export.parity * decisive)
    ties = "n/a" if export.tie_agreement is None else f"{export.tie_agreement:.2f}"
    out = [
        floor(
            "parity", wilson(agree, decisive, confidence=ctx.contract.evaluation.confidence),
            p.min_agreement, ">=", "parity.min_agreement", min_n=1,
            on_insufficient="block", hard=True,
            detail=f"int8 vs fp32 argmax on {decisive} decisive rows of {export.n_parity} "
            f"({export.n_ties} near-ties below margin {p.tie_margin:g}, agreement {ties}), "
            f"dynamic int8, fp32 kept: {export.kept_fp32}",
        )
    ]  # fmt: skip
    if ctx.rows.gold and len(export.torch_argmax) == len(ctx.rows.truth):
        targets = label_targets(labels, ctx.rows.truth)
        fp32_ok = np.asarray(export.torch_argmax) == targets
        int8_ok = np.asarray(export.int8_argmax) == targets
        conf = ctx.contract.evaluation.confidence
        out.append(non_inferior(
            "int8_accuracy_vs_fp32", paired_difference(fp32_ok, int8_ok, confidence=conf),
            p.max_accuracy_drop, "parity.max_accuracy_drop",
            min_n=ctx.contract.evaluation.min_comparison_rows,
            on_insufficient=ctx.on_insufficient, detail="fp32 network -> int8 artifact",
        ))  # fmt: skip
    return out


def _quality(
    ctx: GateContext, probs: np.ndarray[Any, Any], targets: np.ndarray[Any, Any],
    labels: list[str], unknown: np.ndarray[Any, Any],
) -> list[GateResult]:  # fmt: skip
    q, ev = ctx.contract.quality, ctx.contract.evaluation
    conf, n = ev.confidence, len(targets)
    correct = int(np.sum(probs.argmax(axis=1) == targets))
    soft = _Soft(min_n=ev.min_rows, on_insufficient=ctx.on_insufficient)

    def boot(fn: Any) -> Interval:
        return bootstrap(rows_metric(fn, probs, targets), n, confidence=conf)

    def selective(p: Any, t: Any) -> float:
        return selective_accuracy(p, t, q.selective_coverage)

    out = [
        floor("accuracy", wilson(correct, n, confidence=conf), q.min_accuracy, ">=",
              "quality.min_accuracy", **soft),
        floor("macro_f1", boot(macro_f1), q.min_macro_f1, ">=", "quality.min_macro_f1", **soft),
        floor("ece", boot(ece), q.max_ece, "<=", "quality.max_ece",
              detail="15 bins, calibrated", **soft),
        floor("selective_accuracy", boot(selective), q.min_selective_accuracy, ">=",
              "quality.min_selective_accuracy", detail=f"coverage {q.selective_coverage:g}",
              **soft),
        floor("aurc", boot(aurc), q.max_aurc, "<=", "quality.max_aurc", **soft),
    ]  # fmt: skip
    oos = ctx.contract.task.oos_label
    if oos and oos in labels:
        k = labels.index(oos)
        predicted = probs.argmax(axis=1)
        # With fallback.open_set, an abstention on an unknown input is an out-of-scope answer.
        is_oos, said_oos = targets == k, (predicted == k) | unknown
        oos_soft = _Soft(min_n=ev.min_oos_rows, on_insufficient=ctx.on_insufficient)
        out += [
            floor("oos_recall", wilson(int(np.sum(is_oos & said_oos)), int(is_oos.sum()),
                                       confidence=conf),
                  q.min_oos_recall, ">=", "quality.min_oos_recall",
                  detail=f"{oos!r} rows answered {oos!r}", **oos_soft),
            floor("oos_precision", wilson(int(np.sum(is_oos & said_oos)), int(said_oos.sum()),
                                          confidence=conf),
                  q.min_oos_precision, ">=", "quality.min_oos_precision",
                  detail=f"answers {oos!r} that were", **oos_soft),
        ]  # fmt: skip
    return out


def _serving(ctx: GateContext, candidate: ModelVersion, model: OnnxStudent) -> list[GateResult]:
    s = ctx.contract.serving
    latencies = _latencies_ms(model, ctx.rows.texts)
    p95 = float(np.percentile(latencies, 95))
    # One core per request for the mean latency: what a request costs at full utilisation.
    cost = float(np.mean(latencies)) / 1000 / 3600 * s.cpu_hour_usd * 1000 * max(1, ctx.threads)
    threads = f"single query, {ctx.threads or 'all'} thread(s)"
    return [
        constraint("p95_latency_ms", p95, s.max_p95_latency_ms, "<=",
                   "serving.max_p95_latency_ms", threads),
        constraint("peak_rss_mb", _serving_rss_mb(candidate, ctx.rows.texts, ctx),
                   s.max_rss_mb, "<=", "serving.max_rss_mb"),
        constraint("cost_per_1k_usd", cost, s.max_cost_per_1k_requests, "<=",
                   "serving.max_cost_per_1k_requests",
                   f"mean latency x {s.cpu_hour_usd:g} USD per core-hour"),
    ]  # fmt: skip


def _privacy(ctx: GateContext) -> list[GateResult]:
    limit = ctx.contract.privacy.max_user_epsilon
    if limit is None:
        return []
    if ctx.user_epsilon is None:
        return [blocked("user_epsilon", "privacy.max_user_epsilon",
                        "the contract requires DP training; this run did not use it")]  # fmt: skip
    detail = "lifetime: every DP run of the most-spent user, warm-start ancestors' included"
    return [
        constraint(
            "user_epsilon", ctx.user_epsilon, limit, "<=", "privacy.max_user_epsilon", detail
        )
    ]


def _versus_champion(
    warehouse: Warehouse,
    ctx: GateContext,
    candidate: ModelVersion,
    champion: ModelVersion,
    cand_probs: np.ndarray[Any, Any],
    targets: np.ndarray[Any, Any],
) -> list[GateResult]:
    ch, ev = ctx.contract.champion, ctx.contract.evaluation
    try:
        champ_model = load_onnx_student(
            champion.artifact_dir, threads=ctx.threads, retrieval=ctx.retrieval
        )
        champ_probs = champ_model.predict_proba(ctx.rows.texts)
        champ_targets = label_targets(champ_model.labels, ctx.rows.truth)
    except Exception as exc:
        # Fail closed: a candidate that cannot be compared with what serves is not shown to be
        # no worse. Promotion then needs --force --reason, which is recorded.
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        detail = f"champion {champion.version} could not be loaded ({reason})"
        return [blocked("champion_unavailable", "champion", detail)]
    vs = f"champion {champion.version}"
    soft = _Soft(min_n=ev.min_comparison_rows, on_insufficient=ctx.on_insufficient)
    conf = ev.confidence
    champ_ok = champ_probs.argmax(axis=1) == champ_targets
    cand_ok = cand_probs.argmax(axis=1) == targets
    out = [
        non_inferior(
            "accuracy_vs_champion", paired_difference(champ_ok, cand_ok, confidence=conf),
            ch.max_accuracy_regression, "champion.max_accuracy_regression", detail=vs, **soft,
        ),
    ]  # fmt: skip
    if champ_model.labels == list(candidate.label_set):
        out.append(non_inferior(
            "macro_f1_vs_champion",
            paired_metric_difference(macro_f1, champ_probs, cand_probs, targets, confidence=conf),
            ch.max_macro_f1_regression, "champion.max_macro_f1_regression", detail=vs, **soft,
        ))  # fmt: skip
    # Hard cases are evaluation rows too: the answers above, on those rows.
    hard = _hard_case_ids(warehouse, candidate.dataset_hash, ch.hard_cases_days)
    on_hard = np.array([case_id in hard for case_id in ctx.rows.case_ids], dtype=bool)
    if len(on_hard) != len(cand_ok):
        on_hard = np.zeros(len(cand_ok), dtype=bool)
    out.append(non_inferior(
        "hard_cases_vs_champion",
        paired_difference(champ_ok[on_hard], cand_ok[on_hard], confidence=conf),
        ch.max_hard_cases_regression, "champion.max_hard_cases_regression",
        detail=f"{vs}, recent hard cases", **soft,
    ))  # fmt: skip
    return out


_COLUMNS = (
    "gate, value, threshold, comparator, passed, detail, n, ci_lower, ci_upper, clause, verdict"
)


def _store(
    warehouse: Warehouse, version: str, results: list[GateResult], contract: str, eval_set: str
) -> None:
    with warehouse.transaction() as con:
        con.execute("DELETE FROM gate_results WHERE version = ?", [version])
        for r in results:
            con.execute(
                f"INSERT INTO gate_results (version, {_COLUMNS}, contract_hash, eval_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [version, r.gate, r.value, r.threshold, r.comparator, r.passed, r.detail, r.n,
                 r.lower, r.upper, r.clause, r.verdict, contract, eval_set],
            )  # fmt: skip


def stored_gates(warehouse: Warehouse, version: str) -> list[GateResult]:
    rows = warehouse.query(
        f"SELECT {_COLUMNS} FROM gate_results WHERE version = ? ORDER BY evaluated_at, gate",
        [version],
    )
    return [
        GateResult(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10] or (Verdict.PASS if row[4] else Verdict.FAIL),
        )
        for row in rows
    ]


def judged_under(warehouse: Warehouse, version: str) -> tuple[str | None, str | None]:
    """The contract hash and evaluation-set hash a version's stored gates were judged under."""
    rows = warehouse.query(
        "SELECT contract_hash, eval_hash FROM gate_results WHERE version = ? LIMIT 1", [version]
    )
    return (rows[0][0], rows[0][1]) if rows else (None, None)
