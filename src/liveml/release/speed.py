"""Inference speed: latency percentiles at batch 1 and throughput at the best batch size.

Task-independent: it times any callable. Both measurements are bounded in time so that the
evaluate stage stays fast on a small CPU machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def _no_grad():
    import torch

    return torch.inference_mode()


def latency(
    fn: Callable[[Any], Any],
    example: Any,
    *,
    warmup: int = 3,
    iters: int = 30,
    max_time: float = 5.0,
    sync: Callable[[], None] | None = None,
) -> dict:
    """p50/p95 wall time (ms) of `fn(example)` over `iters` calls after `warmup` calls.

    Stops early (after at least 5 timed calls) once `max_time` seconds are spent timing, so a
    slow model cannot stall the stage; `n` says how many calls were timed.
    """
    import numpy as np

    if iters < 1:
        raise ValueError(f"latency: iters must be >= 1, got {iters}")
    sync = sync or (lambda: None)
    times: list[float] = []
    with _no_grad():
        for _ in range(warmup):
            fn(example)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(example)
            sync()  # an accelerator returns before it finishes; wait so the time is real
            times.append(time.perf_counter() - t0)
            if len(times) >= 5 and time.perf_counter() - start > max_time:
                break
    ms = np.asarray(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "n": len(times),
    }


def throughput(
    fn: Callable[[Any], Any],
    make_batch: Callable[[int], Any],
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    *,
    min_time: float = 1.0,
    max_time: float = 15.0,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict:
    """Items/s of `fn(make_batch(bs))` per batch size; the best one is the headline number.

    Each batch size is called repeatedly for at least `min_time` seconds (and at least twice)
    after `warmup` calls, so short calls are averaged and long ones are not over-sampled.
    Batch sizes (in increasing order) whose predicted cost would push the total past
    `max_time` seconds are skipped and listed under `skipped`.
    """
    if not batch_sizes:
        raise ValueError("throughput: batch_sizes is empty")
    sync = sync or (lambda: None)
    per_bs: dict[int, float] = {}
    skipped: list[int] = []
    spent = 0.0
    with _no_grad():
        for bs in sorted(int(b) for b in batch_sizes):
            if per_bs:
                # A call scales about linearly with the batch: predict this one's total cost.
                call = bs / per_bs[max(per_bs)]
                if spent + max(min_time, 2 * call) + warmup * call > max_time:
                    skipped.append(bs)
                    continue
            t_start = time.perf_counter()
            batch = make_batch(bs)
            for _ in range(warmup):
                fn(batch)
            sync()
            calls = 0
            start = time.perf_counter()
            while True:
                fn(batch)
                calls += 1
                sync()
                elapsed = time.perf_counter() - start
                if calls >= 2 and elapsed >= min_time:
                    break
            per_bs[bs] = bs * calls / elapsed
            spent += time.perf_counter() - t_start
    best = max(per_bs, key=per_bs.__getitem__)
    return {
        "throughput": per_bs[best],
        "best_batch_size": best,
        "per_batch_size": per_bs,
        "skipped": skipped,
    }


def device_name(device) -> str:
    """`cuda: <GPU name>` or `cpu: <CPU model>`: where a speed figure was measured."""
    import platform
    from pathlib import Path

    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:  # Linux names the CPU model here; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}"
