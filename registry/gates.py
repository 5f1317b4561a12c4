"""Gates: what a candidate's int8 artifact must show before it may serve.

Absolute gates (thresholds in ``[registry]``): accuracy, macro-F1, ECE (15 bins, after the
stored temperature), selective accuracy at ``selective_coverage`` and AURC (abstention
quality), out-of-scope recall when ``oos_label`` is set and present, p95 single-query latency,
serving-process peak RSS, int8 artifact size, and argmax parity with torch (>= 99.5%).

Against the champion, when there is one: accuracy and macro-F1 on the candidate's gold
evaluation set may not fall more than ``regression_tolerance`` below the champion's, and
accuracy on the recent hard cases (evaluation cases captured for low confidence, low margin,
escalation or a watched label in the last ``hard_cases_days``) not more than
``hard_cases_tolerance``. Accuracy drops count only when a paired sign test on the same rows
says they are not noise (p < 0.05). With no champion yet only the absolute gates apply. Every gate's
value, threshold and verdict is stored in ``gate_results``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from tutorloop.evaluation.classifier import label_targets
from tutorloop.evaluation.metrics import quality, single_query_latencies_ms
from tutorloop.infra.settings_sections import RegistrySettings
from tutorloop.infra.tables import CaptureReason
from tutorloop.infra.warehouse import Warehouse
from tutorloop.registry.onnx_model import OnnxStudent, load_onnx_student
from tutorloop.registry.store import ModelVersion

if TYPE_CHECKING:  # export imports torch; promote and rollback must start fast
    from tutorloop.registry.export import ExportResult

_HARD_REASONS = (
    CaptureReason.LOW_CONFIDENCE,
    CaptureReason.LOW_MARGIN,
    CaptureReason.ESCALATED,
    CaptureReason.WATCHED_LABEL,
)


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None
    threshold: float | None
    comparator: str  # ">=", "<=", "info"
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gate(
    name: str, value: float, threshold: float, comparator: str, detail: str = ""
) -> GateResult:
    ok = bool(value >= threshold if comparator == ">=" else value <= threshold)
    return GateResult(name, round(float(value), 6), threshold, comparator, ok, detail)


def _p95_latency_ms(model: OnnxStudent, texts: list[str], n: int = 200) -> float:
    sample = (texts or ["how do I reset my card pin?"]) * (n // max(1, len(texts)) + 1)
    return float(np.percentile(single_query_latencies_ms(model.predict_proba, sample[:n]), 95))


_RSS_PROBE = """
import json, resource, sys
from pathlib import Path
from tutorloop.registry.onnx_model import load_onnx_student
model = load_onnx_student(Path(sys.argv[1]), threads=int(sys.argv[2]), verified=True)
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


def _serving_rss_mb(version: ModelVersion, texts: list[str], threads: int) -> float:
    """Peak RSS of a fresh process that loads the int8 model and answers 100 queries."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(version.artifact_dir), str(threads),
         json.dumps(texts[:50])],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def _hard_cases(
    warehouse: Warehouse, dataset_hash: str | None, days: float
) -> tuple[list[str], list[str]]:
    if dataset_hash is None:
        return [], []
    since = datetime.now(UTC) - timedelta(days=days)
    rows = warehouse.query(
        "SELECT c.text, m.label FROM dataset_members m JOIN cases c USING (case_id)"
        " WHERE m.dataset_hash = ? AND m.split = 'eval' AND c.ts >= ?"
        " AND c.capture_reason IN (SELECT unnest(?)) ORDER BY m.case_id",
        [dataset_hash, since, list(_HARD_REASONS)],
    )
    return [t for t, _ in rows], [label for _, label in rows]


def evaluate_gates(
    warehouse: Warehouse,
    cfg: RegistrySettings,
    candidate: ModelVersion,
    export: ExportResult,
    texts: list[str],
    truth: list[str],
    champion: ModelVersion | None,
    *,
    threads: int = 1,
) -> list[GateResult]:
    """Evaluate every gate on the candidate's int8 artifact; store and return the results.

    ``threads``: ONNX Runtime threads per query, as serving runs it (``serving.threads``).
    """
    model = load_onnx_student(candidate.artifact_dir, threads=threads)
    results = [
        _gate(
            "parity",
            export.parity,
            cfg.min_parity,
            ">=",
            f"int8 vs torch argmax on {export.n_parity - export.n_ties} decisive rows of "
            f"{export.n_parity} ({export.n_ties} near-ties, agreement "
            f"{'n/a' if export.tie_agreement is None else f'{export.tie_agreement:.2f}'}), "
            f"fp32 kept: {export.kept_fp32}",
        ),
        _gate("artifact_mb", export.int8_mb, cfg.max_artifact_mb, "<="),
    ]
    if texts:
        probs = model.predict_proba(texts)
        targets = label_targets(model.labels, truth)
        q = quality(probs, targets, coverage=cfg.selective_coverage)
        n = f"n={q.n}"
        results += [
            _gate("accuracy", q.accuracy, cfg.min_accuracy, ">=", n),
            _gate("macro_f1", q.macro_f1, cfg.min_macro_f1, ">=", n),
            _gate("ece", q.ece, cfg.max_ece, "<=", f"{n}, 15 bins, calibrated"),
            _gate(
                "selective_accuracy", q.selective_accuracy, cfg.min_selective_accuracy, ">=",
                f"{n}, coverage {cfg.selective_coverage:g}",
            ),
            _gate("aurc", q.aurc, cfg.max_aurc, "<=", n),
        ]  # fmt: skip
        if cfg.oos_label and cfg.oos_label in truth:
            oos = (
                targets == model.labels.index(cfg.oos_label)
                if cfg.oos_label in model.labels
                else None
            )
            if oos is not None:
                recall = float(np.mean(probs[oos].argmax(axis=1) == targets[oos]))
                results.append(
                    _gate("oos_recall", recall, cfg.min_oos_recall, ">=", f"n={int(oos.sum())}")
                )
        if champion is not None:
            results += _versus_champion(
                warehouse, cfg, candidate, champion, model, probs, q, texts, truth, threads
            )
    else:
        missing = "no gold evaluation rows: import some (dataset import --eval)"
        results.append(GateResult("accuracy", None, cfg.min_accuracy, ">=", False, missing))
    results.append(
        _gate("p95_latency_ms", _p95_latency_ms(model, texts), cfg.max_p95_latency_ms, "<=",
              f"single query, {threads or 'all'} thread(s)")
    )  # fmt: skip
    results.append(
        _gate(
            "peak_rss_mb",
            _serving_rss_mb(candidate, texts, threads),
            cfg.max_rss_mb,
            "<=",
        )
    )
    _store(warehouse, candidate.version, results)
    return results


def _correct(model: OnnxStudent, texts: list[str], truth: list[str]) -> np.ndarray[Any, Any]:
    return np.asarray(
        model.predict_proba(texts).argmax(axis=1) == label_targets(model.labels, truth)
    )


def _paired_regression(
    name: str, champ: np.ndarray[Any, Any], cand: np.ndarray[Any, Any], tol: float, vs: str
) -> GateResult:
    """Fail only on a drop beyond ``tol`` that is also significant.

    Paired on the same rows: ``lost`` = rows the champion got right and the candidate wrong,
    ``won`` the reverse. A one-sided exact binomial (sign) test on lost vs won must give
    p < 0.05; otherwise the drop is within noise. (Measured in the demo: on 43 hard cases, one
    lost case was a 2.3-point drop and blocked a candidate 4.4 points better on 428 gold rows.)
    """
    from scipy.stats import binomtest

    delta = float(cand.mean() - champ.mean())
    lost = int(np.sum(champ & ~cand))
    won = int(np.sum(cand & ~champ))
    p = binomtest(lost, lost + won, 0.5, alternative="greater").pvalue if lost + won else 1.0
    passed = bool(delta >= -tol or p >= 0.05)  # numpy bools do not go into DuckDB
    detail = (
        f"{vs}, n={len(cand)}: {champ.mean():.4f} -> {cand.mean():.4f}; "
        f"lost {lost}, won {won}, sign test p={float(p):.3f}"
    )
    return GateResult(name, round(delta, 6), -tol, ">=", passed, detail)


def _versus_champion(
    warehouse: Warehouse,
    cfg: RegistrySettings,
    candidate: ModelVersion,
    champion: ModelVersion,
    cand_model: OnnxStudent,
    cand_probs: Any,
    cand_q: Any,
    texts: list[str],
    truth: list[str],
    threads: int,
) -> list[GateResult]:
    try:
        champ_model = load_onnx_student(champion.artifact_dir, threads=threads)
    except Exception as exc:
        # Fail closed: a candidate that cannot be compared with what serves is not shown to be
        # no worse. Promotion then needs --force --reason, which is recorded.
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        detail = f"champion {champion.version} could not be loaded ({reason})"
        return [GateResult("champion_unavailable", None, None, "info", False, detail)]
    champ_q = quality(
        champ_model.predict_proba(texts), label_targets(champ_model.labels, truth),
        coverage=cfg.selective_coverage,
    )  # fmt: skip
    tol = cfg.regression_tolerance
    vs = f"champion {champion.version}"
    out = [
        _paired_regression(
            "accuracy_vs_champion", _correct(champ_model, texts, truth),
            cand_probs.argmax(axis=1) == label_targets(cand_model.labels, truth), tol, vs,
        ),
        _gate("macro_f1_vs_champion", cand_q.macro_f1 - champ_q.macro_f1, -tol, ">=",
              f"{vs}: {champ_q.macro_f1:.4f} -> {cand_q.macro_f1:.4f}"),
    ]  # fmt: skip
    hard_texts, hard_truth = _hard_cases(warehouse, candidate.dataset_hash, cfg.hard_cases_days)
    if hard_texts:
        out.append(
            _paired_regression(
                "hard_cases_vs_champion", _correct(champ_model, hard_texts, hard_truth),
                _correct(cand_model, hard_texts, hard_truth), cfg.hard_cases_tolerance, vs,
            )
        )  # fmt: skip
    else:
        none = "no recent hard cases with gold labels: not compared"
        tol = -cfg.hard_cases_tolerance
        out.append(GateResult("hard_cases_vs_champion", None, tol, ">=", True, none))
    return out


def _store(warehouse: Warehouse, version: str, results: list[GateResult]) -> None:
    with warehouse.transaction() as con:
        con.execute("DELETE FROM gate_results WHERE version = ?", [version])
        for r in results:
            con.execute(
                "INSERT INTO gate_results (version, gate, value, threshold, comparator, passed,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [version, r.gate, r.value, r.threshold, r.comparator, r.passed, r.detail],
            )


def stored_gates(warehouse: Warehouse, version: str) -> list[GateResult]:
    rows = warehouse.query(
        "SELECT gate, value, threshold, comparator, passed, detail FROM gate_results"
        " WHERE version = ? ORDER BY evaluated_at, gate",
        [version],
    )
    return [GateResult(*row) for row in rows]
