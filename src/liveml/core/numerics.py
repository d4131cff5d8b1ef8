"""CPU numerics: what decides a run's last bits across machines, recorded; an AVX2 mode that
makes them the same on every x86-64 machine.

PyTorch's CPU kernels pick their code path from the machine's instruction set at run time:
ATen's own kernels (AVX2 or AVX-512), oneDNN's convolutions (AVX2, AVX-512, AMX) and MKL's BLAS
each sum in a different order per path. Deterministic training is therefore bit-identical only
on CPUs of the same generation: the same config, data and seed trained on an AVX-512 machine and
an AVX2 one give different weights after one step, and a different model after 30 epochs.

What may differ between two machines is therefore exactly this, and every run record says what
was in effect (`environment.numerics`: the CPU, ATen's capability and the three switches);
`liveml reproduce` names a difference. By default (`LIVEML_CPU_ISA=native`) each machine uses
its fastest path: results are bit-identical on machines of the same CPU generation (the
committed models were trained so). `LIVEML_CPU_ISA=avx2` pins all three libraries to their AVX2
path before torch is imported (they read these variables once, at their first use), so a run
reproduces bit-identically on any x86-64 CPU with AVX2 and FMA (Intel since 2013, AMD since
2015), at some speed cost (convolutions about 1.3x slower here). A variable the user sets
themselves is respected.
"""

from __future__ import annotations

import os
import platform

MODE_ENV = "LIVEML_CPU_ISA"
MODES = ("avx2", "native")
# Each library's own switch to its AVX2 code path.
PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions, some matmuls)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility
}


def mode() -> str:
    """The numerics mode of this process: `native` (default) or `avx2`."""
    value = os.environ.get(MODE_ENV, "native").strip().lower() or "native"
    if value not in MODES:
        raise ValueError(
            f"{MODE_ENV}={value!r} is not a CPU numerics mode; fix: set it to one of {MODES} "
            "(native: fastest, the same results on one CPU generation; avx2: the same results "
            "on every AVX2 machine)"
        )
    return value


def pin() -> None:
    """With LIVEML_CPU_ISA=avx2, set the AVX2 switches for this process and its children
    (each unless the user set it).

    Only effective before torch runs its first kernel; liveml calls it when it is imported. A
    bad LIVEML_CPU_ISA pins nothing here (importing must not fail); training reports it.
    """
    try:
        native = mode() == "native"
    except ValueError:
        return
    if native or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    for var, value in PINS.items():
        os.environ.setdefault(var, value)


def describe() -> dict:
    """What decided this process's CPU numerics, for the run record."""
    import torch

    return {
        "mode": mode(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        **{var.lower(): os.environ.get(var) for var in PINS},
    }


def differences(recorded: dict | None, current: dict) -> list[str]:
    """How the recorded numerics differ from `current` in what changes results (not the CPU
    model: two CPUs on the same pinned path give the same bits)."""
    if not recorded:
        return []
    keys = ("machine", "aten_capability", *(var.lower() for var in PINS))
    return [
        f"{k}: run {recorded.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if recorded.get(k) != current.get(k)
    ]


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
