"""The training path "auto" picks, on this CPU and on an AVX2-only one.

``AVX2_ONLY`` lowers torch's capability (bitsandbytes registers its fast 4-bit CPU kernels on
that report) and oneDNN's instruction set to AVX2: a real AVX2-only run on any x86-64 machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.test_trainer import TEST, TRAIN, tiny_env, tiny_settings
from tutorloop.infra.machine import AVX2_ONLY, NF4_SLOWDOWN_WITHOUT_FAST_KERNEL, training_path
from tutorloop.infra.warehouse_backends import open_warehouse
from tutorloop.registry.store import get, verify
from tutorloop.registry.torch_model import load_torch_student

AVX2 = AVX2_ONLY
# The AVX2 emulation lowers x86 instruction sets: it means nothing on ARM.
x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86 CPU")


def test_auto_picks_nf4_exactly_where_bitsandbytes_has_a_fast_kernel() -> None:
    fast = (
        torch.backends.cpu.get_cpu_capability() == "AVX512"
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    path = training_path("auto")
    assert path.quantization == ("nf4" if fast else "none")
    assert (path.fast_kernel is not None) == fast
    assert training_path("none").quantization == "none"
    assert training_path("nf4").quantization == "nf4"  # as configured, fast or not


@x86_only
def test_auto_trains_lora_in_fp32_on_an_avx2_cpu(tmp_path: Path) -> None:
    env = tiny_env(tmp_path / "d") | AVX2
    imported = run_cli("dataset", "import", "--data", str(TEST), "--eval", env=env)
    assert imported.returncode == 0, imported.stderr
    done = run_cli(
        "trainer",
        "bootstrap",
        "--data",
        str(TRAIN),
        "--per-label",
        "10",
        "--json",
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["quantization"] == "none" and report["fallback_reason"] is None
    assert report["metrics"]["eval"]["accuracy"] > 0.3  # 8 labels: chance is 0.125

    warehouse = open_warehouse(tiny_settings(tmp_path / "d"))
    [run] = warehouse.query_dicts("SELECT quantization, config, hardware FROM training_runs")
    assert run["quantization"] == "none"
    chosen = json.loads(run["config"])["training_path"]
    assert chosen["requested"] == "auto" and chosen["chosen"] == "none"
    assert chosen["fast_4bit_kernel"] is None and "AVX2" in chosen["reason"]
    assert json.loads(run["hardware"])["cpu_capability"] == "AVX2"
    version = get(warehouse, report["version"])
    card = verify(version.artifact_dir)
    assert card["quantization"] == "none" and card["quantization_requested"] == "auto"
    assert card["quantization_reason"] == chosen["reason"]
    # Train what you serve: an fp32-trained adapter merges into the plain fp32 base.
    student = load_torch_student(version.artifact_dir)
    assert student.predict_proba(["I lost my card"]).shape == (1, 8)


@x86_only
def test_explicit_nf4_without_the_fast_kernel_trains_as_asked_and_warns_once() -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from tutorloop.trainer.student import resolve_training_path\n"
        "paths = [resolve_training_path('nf4') for _ in range(3)]\n"
        "print(paths[0].quantization, paths[0].slow)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | AVX2,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["nf4", "True"]
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out.stderr
    assert NF4_SLOWDOWN_WITHOUT_FAST_KERNEL in warnings[0] and "AVX2" in warnings[0]


@x86_only
def test_doctor_names_the_cpu_and_the_path_auto_picks() -> None:
    missing_broker = {"TUTORLOOP_BROKER__PORT": "1"}
    result = run_cli("doctor", env=missing_broker | AVX2)
    assert result.returncode == 1  # the broker is missing; the machine rows come first
    out = " ".join(result.stdout.split())
    assert "torch capability AVX2" in out
    assert "trainer.quantization = auto -> none" in out
    assert "torch threads" in out and "GiB free" in out
    slow = run_cli("doctor", env=missing_broker | AVX2 | {"TUTORLOOP_TRAINER__QUANTIZATION": "nf4"})
    lines = [line for line in slow.stdout.splitlines() if "training path" in line]
    assert lines and "warn" in lines[0]
