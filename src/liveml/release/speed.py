"""Inference speed: latency percentiles at batch 1 and throughput at the best batch size.

Task-independent: it times any callable; `task_speed` times a task's deployable on its real
test inputs for the evaluate stage, and the task names the figures (`Task.speed_metrics`).
Every measurement is bounded in time so that the evaluate stage stays fast on a small CPU
machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from liveml.tasks.base import Task

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


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


@dataclass
class Speed:
    """A deployable's speed on real inputs: `calls` are (input index, seconds) of the timed
    batch-1 calls in order (inputs in turn), `throughput` is `throughput()`'s result on
    zero-padded batches of them; `device` and `num_threads` say where it ran."""

    inputs: list
    calls: list[tuple[int, float]]
    throughput: dict
    device: str
    num_threads: int

    def latency_ms(self, q: float) -> float:
        import numpy as np

        return float(np.percentile([s * 1000.0 for _, s in self.calls], q))

    def metrics(self, throughput_key: str = "throughput_per_s", *, per_batch_size: bool = True):
        """The standard figures: latency_p50_ms, latency_p95_ms, `throughput_key` (inputs/s
        at the best batch size), best_batch_size, throughput_per_batch_size, device,
        num_threads."""
        out: dict[str, Any] = {
            "latency_p50_ms": self.latency_ms(50),
            "latency_p95_ms": self.latency_ms(95),
            throughput_key: self.throughput["throughput"],
            "best_batch_size": self.throughput["best_batch_size"],
        }
        if per_batch_size:
            out["throughput_per_batch_size"] = {
                str(k): v for k, v in self.throughput["per_batch_size"].items()
            }
        return out | {"device": self.device, "num_threads": self.num_threads}


def pad_batch(items: Sequence[Any]):
    """Batch-of-1 tensors as one batch: zero-padded at the end of every axis to the largest
    shape (equal shapes simply stack), e.g. audio clips of different lengths."""
    import torch

    if all(x.shape == items[0].shape for x in items):
        return torch.cat(list(items))
    shape = [max(int(x.shape[d]) for x in items) for d in range(1, items[0].dim())]
    out = items[0].new_zeros((len(items), *shape))
    for i, x in enumerate(items):
        out[(i, *(slice(0, int(n)) for n in x.shape[1:]))] = x[0]
    return out


def measure(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    latency_iters: int = 30,
    latency_time: float = 5.0,
    min_time: float = 1.0,
    max_time: float = 12.0,
    device: Any = None,
) -> Speed:
    """Latency at batch 1 over `inputs` in turn (after 3 warm-up calls; `latency_iters` calls
    or `latency_time` seconds, at least 5) and throughput of `fn` on `pad_batch`es of the
    inputs cycled to each batch size (see `throughput`)."""
    import torch

    if not inputs:
        raise ValueError("measure: no inputs to time; fix: pass real test inputs")
    device = device or torch.device("cpu")
    sync = torch.cuda.synchronize if getattr(device, "type", "cpu") == "cuda" else None
    calls: list[tuple[int, float]] = []
    with _no_grad():
        for i in range(3):  # warm-up: first calls allocate
            fn(inputs[i % len(inputs)])
        if sync:
            sync()
        start = time.perf_counter()
        for k in range(max(int(latency_iters), 1)):
            i = k % len(inputs)
            t0 = time.perf_counter()
            fn(inputs[i])
            if sync:
                sync()
            calls.append((i, time.perf_counter() - t0))
            if len(calls) >= 5 and time.perf_counter() - start > latency_time:
                break

    def make_batch(bs: int):
        return pad_batch([inputs[i % len(inputs)] for i in range(bs)])

    thr = throughput(fn, make_batch, batch_sizes, min_time=min_time, max_time=max_time, sync=sync)
    return Speed(list(inputs), calls, thr, device_name(device), torch.get_num_threads())


def task_speed(task: Task, cfg: Any, module: Any, data_dir: Path, **kw: Any) -> dict:
    """The task's speed metrics for the evaluate stage: its deployable timed on up to 32 of its
    real test inputs (`export_inputs`), named by `task.speed_metrics`. `kw` goes to `measure`
    (tests shorten it)."""
    net = task.deployable(module).eval()
    batch_sizes = kw.get("batch_sizes", BATCH_SIZES)
    inputs = task.export_inputs(cfg, data_dir, n=max(batch_sizes))
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else None
    if device is not None:
        inputs = [x.to(device) for x in inputs]
    return task.speed_metrics(cfg, measure(net, inputs, device=device, **kw))
