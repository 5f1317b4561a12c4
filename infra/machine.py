"""The machine a process runs on, and the training path that is fast on it.

QLoRA on CPU is fast only where two things hold: bitsandbytes registers its 4-bit CPU kernels,
which it does exactly when torch reports the ``AVX512`` capability, and bf16 matrix products
(QLoRA's compute dtype) run in oneDNN, which needs AVX-512 (or AMX) too; without them torch
multiplies bf16 in a scalar loop: 14x slower than oneDNN's bf16 and 5.6x slower than fp32 in
a microbenchmark here (BENCHMARKS.md). Elsewhere — AVX2-only x86 CPUs,
ARM — nf4 training is an order of magnitude slower than LoRA on the full-precision base
(``bench/retrain.py``), so ``trainer.quantization = "auto"`` picks nf4 only where both hold.
The trainer trains on the CPU, also on a machine with a GPU.

On a machine with AVX-512, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` makes torch,
bitsandbytes and oneDNN all behave as on an AVX2-only CPU (:data:`AVX2_ONLY`): that is how the
slow path is measured and tested here.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "AVX2_ONLY",
    "NF4_SLOWDOWN_WITHOUT_FAST_KERNEL",
    "Machine",
    "TrainingPath",
    "describe_machine",
    "fast_4bit_kernel",
    "training_path",
]

# Measured by bench/retrain.py (nf4 on bitsandbytes' default CPU kernel against LoRA on the
# fp32 base, same rows); BENCHMARKS.md names the CPU. Quoted in the warning an explicit nf4
# gets where the fast kernel is missing.
NF4_SLOWDOWN_WITHOUT_FAST_KERNEL = "about 10x"

# The environment that makes this process's torch, bitsandbytes and oneDNN pick the kernels an
# AVX2-only CPU gets (both variables only ever lower what the CPU offers).
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

Quantization = Literal["nf4", "none"]


@dataclass(frozen=True)
class TrainingPath:
    """What a run trains on: ``nf4`` (QLoRA) or ``none`` (LoRA on the fp32 base), and why."""

    requested: str  # "auto", "nf4" or "none"
    quantization: Quantization
    reason: str
    fast_kernel: str | None  # the bitsandbytes 4-bit kernel this device has, if any

    @property
    def slow(self) -> bool:
        """nf4 chosen explicitly on a device without the fast kernel."""
        return self.quantization == "nf4" and self.fast_kernel is None


@dataclass(frozen=True)
class Machine:
    """What a slow run's reader needs to know about where it ran."""

    cpu: str
    arch: str
    cpu_capability: str  # torch's: AVX512, AVX2, DEFAULT, ...
    bf16_matmul: bool  # oneDNN multiplies bf16 here (else torch's scalar fallback)
    cpus: int | None
    torch_threads: int
    cuda: str | None  # the GPU's name when CUDA is available
    memory_gib: float | None
    memory_available_gib: float | None
    disk_free_gib: float | None  # where the data dir lives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model name", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _meminfo_gib(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 2**20, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _cuda_device() -> str | None:
    import torch

    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def _bf16_matmul() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN (some ARM builds)
        return False


@cache
def fast_4bit_kernel() -> str | None:
    """This CPU's fast 4-bit path ("CPU AVX512 + oneDNN bf16"), else None. The trainer trains
    on the CPU, also where a GPU is present, so the GPU does not count."""
    if _cpu_capability() == "AVX512" and _bf16_matmul():
        return "CPU AVX512 + oneDNN bf16"
    return None


def _missing() -> str:
    capability = _cpu_capability()
    if capability == "AVX512":
        return "this CPU has AVX-512 but oneDNN has no bf16 matmul for it"
    return f"torch reports this CPU as {capability}: bitsandbytes' 4-bit CPU kernels need AVX512"


def training_path(requested: str) -> TrainingPath:
    """Resolve ``trainer.quantization`` for this machine: ``auto`` picks nf4 only where
    bitsandbytes has a fast path; an explicit ``nf4`` or ``none`` is kept as asked."""
    kernel = fast_4bit_kernel()
    cost = (
        f"on such a CPU nf4 trains {NF4_SLOWDOWN_WITHOUT_FAST_KERNEL} slower than LoRA on "
        "the fp32 base (bench/retrain.py)"
    )
    if requested == "auto":
        if kernel is not None:
            return TrainingPath(requested, "nf4", f"auto: fast 4-bit path here ({kernel})", kernel)
        return TrainingPath(requested, "none", f"auto: {_missing()}; {cost}", kernel)
    if requested == "nf4":
        if kernel is None:
            return TrainingPath(
                requested, "nf4", f"configured, though {_missing()}; {cost}", kernel
            )
        return TrainingPath(requested, "nf4", f"configured ({kernel})", kernel)
    if requested == "none":
        return TrainingPath(requested, "none", "configured", kernel)
    raise ValueError(f"unknown trainer.quantization {requested!r}")


def describe_machine(data_dir: Path | None = None) -> Machine:
    import torch

    disk: float | None = None
    if data_dir is not None:
        probe = data_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            disk = round(shutil.disk_usage(probe).free / 2**30, 1)
        except OSError:
            disk = None
    return Machine(
        cpu=_cpu_name(),
        arch=platform.machine(),
        cpu_capability=_cpu_capability(),
        bf16_matmul=_bf16_matmul(),
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        cuda=_cuda_device(),
        memory_gib=_meminfo_gib("MemTotal"),
        memory_available_gib=_meminfo_gib("MemAvailable"),
        disk_free_gib=disk,
    )
