"""Benchmark: int8 parity of dynamic against static (calibrated, QDQ) quantization, same run.

For each model version of a tutorloop data directory (a finished `tutorloop demo`): export
the merged fp32 network to ONNX, quantize it dynamically (the exporter's default) and
statically (``quantize_static``, QDQ, per-channel weights, activations calibrated on the
version's own training texts), and measure on held-out test queries, one query at a time as
serving runs them:

- argmax agreement with the fp32 network on decisive rows (top-2 margin >= the contract's
  tie margin) and the number of near-ties,
- accuracy of fp32 and int8, and int8 - fp32 with its paired one-sided 95% bounds,
- p95 single-query latency (one thread) and file size.

The figure is agreement, as a ratio of static to dynamic. Targets (issue #14): agreement on
decisive rows >= 0.995 and int8 accuracy non-inferior to fp32 by 0.5 point.

    .venv/bin/python bench/parity.py --data-dir tutorloop-demo/data [--eval 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tutorloop.infra.warehouse_backends import open_warehouse

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "banking77"


def _calibration_reader(tokenizer: Any, texts: list[str], max_length: int, pad: bool) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter(
                {k: np.asarray(v, dtype=np.int64) for k, v in tokenizer(
                    [t], return_tensors="np", truncation=True, max_length=max_length,
                    padding="max_length" if pad else False,
                ).items()}
                for t in texts
            )  # fmt: skip

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    return _Reader()


def _static(
    fp32: Path, out: Path, tokenizer: Any, texts: list[str], max_length: int, method: str
) -> None:
    """QDQ int8 with activation ranges calibrated on ``texts``: ``minmax`` on each query as
    it comes, or ``percentile`` (99.99th, clipping outliers) on queries padded to one length
    (the histogram collector needs one shape)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(out),
        _calibration_reader(tokenizer, texts, max_length, pad=method == "percentile"),
        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=(CalibrationMethod.Percentile if method == "percentile"
                          else CalibrationMethod.MinMax),
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"CalibPercentile": 99.99},
    )  # fmt: skip


def _measure(folder: Path, model: Path, texts: list[str]) -> tuple[np.ndarray[Any, Any], float]:
    from tutorloop.evaluation.metrics import single_query_latencies_ms
    from tutorloop.registry.onnx_model import load_onnx_student

    onnx = load_onnx_student(folder, verified=True, model_path=model, threads=1)
    served = np.array([onnx.predict_proba([t])[0].argmax() for t in texts])
    p95 = float(np.percentile(single_query_latencies_ms(onnx.predict_proba, texts[:200]), 95))
    return served, p95


def _row(name: str, served: Any, ref: Any, decisive: Any, targets: Any, p95: float,
         size: float) -> dict[str, Any]:  # fmt: skip
    from tutorloop.evaluation.intervals import paired_difference

    diff = paired_difference(ref == targets, served == targets)
    return {
        "quantization": name, "agreement_decisive": float(np.mean((served == ref)[decisive])),
        "decisive": int(decisive.sum()), "ties": int((~decisive).sum()),
        "int8_accuracy": float(np.mean(served == targets)),
        "fp32_accuracy": float(np.mean(ref == targets)),
        "delta": diff.delta, "delta_lower": diff.lower, "delta_upper": diff.upper,
        "lost": diff.lost, "won": diff.won, "p95_ms": p95, "mb": size,
    }  # fmt: skip


def _version(folder: Path, texts: list[str], truth: list[str], calib: list[str],
             tie_margin: float) -> list[dict[str, Any]]:  # fmt: skip
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tutorloop.evaluation.classifier import label_targets
    from tutorloop.registry.export import _decisive, _export_onnx
    from tutorloop.registry.torch_model import load_torch_student

    student = load_torch_student(folder)
    student.model.set_attn_implementation("eager")
    probs = student.predict_proba(texts)
    ref, decisive = probs.argmax(axis=1), _decisive(probs, tie_margin)
    targets = label_targets(student.labels, truth)
    max_length = int(json.loads((folder / "card.json").read_text())
                     .get("hyperparameters", {}).get("max_length", 64))  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _export_onnx(student.model, student.tokenizer, fp32)
        dynamic = Path(tmp) / "dynamic.onnx"
        quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8, per_channel=True)
        variants = [("fp32 onnx", fp32), ("dynamic", dynamic)]
        for method in ("minmax", "percentile"):
            path = Path(tmp) / f"static-{method}.onnx"
            _static(fp32, path, student.tokenizer, calib, max_length, method)
            variants.append((f"static {method}", path))
        for name, path in variants:
            served, p95 = _measure(folder, path, texts)
            rows.append(_row(name, served, ref, decisive, targets, p95,
                             path.stat().st_size / 2**20))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--versions", nargs="*", default=None)
    parser.add_argument("--eval", type=int, default=1000, help="test queries")
    parser.add_argument("--calibration", type=int, default=300, help="training texts")
    args = parser.parse_args()

    from tutorloop.infra.settings import load_settings
    from tutorloop.labeling.labeled_csv import read_labeled_csv
    from tutorloop.registry.contract import load_contract
    from tutorloop.registry.store import list_versions

    settings = load_settings(data_dir=args.data_dir)
    warehouse = open_warehouse(settings)
    tie = load_contract(settings).parity.tie_margin
    test = read_labeled_csv(DATA / "test.csv")
    order = random.Random(7).sample(range(len(test)), min(args.eval, len(test)))
    texts, truth = [test.texts[i] for i in order], [test.labels[i] for i in order]
    out = []
    for v in list_versions(warehouse):
        if args.versions and v.version not in args.versions:
            continue
        calib = [t for (t,) in warehouse.query(
            "SELECT c.text FROM dataset_members m JOIN cases c USING (case_id)"
            " WHERE m.dataset_hash = ? AND m.split = 'train' ORDER BY m.case_id LIMIT ?",
            [v.dataset_hash, args.calibration])]  # fmt: skip
        for row in _version(v.artifact_dir, texts, truth, calib, tie):
            row["version"] = v.version
            out.append(row)
            print(json.dumps(row), flush=True)
    dyn = [r["agreement_decisive"] for r in out if r["quantization"] == "dynamic"]
    for method in ("static minmax", "static percentile"):
        sta = [r["agreement_decisive"] for r in out if r["quantization"] == method]
        if dyn and sta:
            print(f"{method}/dynamic decisive agreement: {np.mean(sta) / np.mean(dyn):.4f}x "
                  f"({np.mean(sta):.4f} vs {np.mean(dyn):.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
