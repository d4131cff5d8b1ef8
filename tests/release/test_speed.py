"""Speed measurement on functions of known cost (time.sleep), with tolerant bounds."""

from __future__ import annotations

import time

import pytest

from liveml.release.speed import latency, measure, pad_batch, throughput


def test_latency_of_a_2ms_call():
    out = latency(lambda x: time.sleep(0.002), None, warmup=1, iters=20)
    assert out["n"] == 20
    # sleep never returns early; a busy 2-core machine may add scheduling delay on top.
    assert 1.9 <= out["p50_ms"] <= 15.0
    assert out["p95_ms"] >= out["p50_ms"]


def test_latency_stops_at_its_time_budget():
    out = latency(lambda x: time.sleep(0.01), None, warmup=0, iters=1000, max_time=0.1)
    assert 5 <= out["n"] < 100


def test_throughput_picks_the_best_batch_size():
    # 4 ms per call plus 1 ms per item up to 4 items, 8 ms per item beyond (a cache spill):
    # items/ms is 0.2, 0.33, 0.5, 0.2 for batches 1, 2, 4, 8 -> 4 is best.
    def fn(bs):
        time.sleep((4 + min(bs, 4) + 8 * max(bs - 4, 0)) / 1000)

    out = throughput(fn, lambda bs: bs, [1, 2, 4, 8], min_time=0.05)
    assert out["best_batch_size"] == 4
    assert set(out["per_batch_size"]) == {1, 2, 4, 8} and out["skipped"] == []
    assert out["throughput"] == out["per_batch_size"][4]
    assert 300 <= out["throughput"] <= 500  # 4 items / 8 ms, minus scheduling delay


def test_throughput_skips_batch_sizes_past_its_budget():
    out = throughput(
        lambda bs: time.sleep(0.02 * bs), lambda bs: bs, [1, 2, 4, 8], min_time=0.01, max_time=0.3
    )
    assert out["skipped"] and max(out["per_batch_size"]) < min(out["skipped"])
    assert out["best_batch_size"] in out["per_batch_size"]


def test_throughput_needs_batch_sizes():
    with pytest.raises(ValueError):
        throughput(lambda b: None, lambda bs: bs, [])


def test_pad_batch_stacks_equal_shapes_and_pads_others():
    import torch

    a, b = torch.ones(1, 3), torch.full((1, 5), 2.0)
    assert pad_batch([a, a]).shape == (2, 3)
    padded = pad_batch([a, b, a])
    assert padded.shape == (3, 5)
    assert padded[0].tolist() == [1, 1, 1, 0, 0] and padded[1].tolist() == [2] * 5


def test_measure_times_every_input_in_turn_and_names_the_figures():
    import torch

    inputs = [torch.zeros(1, n) for n in (1, 2, 3)]
    seen = []

    def fn(x):  # 1 ms per call plus 1 ms per row: batches pay off
        seen.append(tuple(x.shape))
        time.sleep((1 + x.shape[0]) / 1000)

    speed = measure(fn, inputs, batch_sizes=(1, 4), latency_iters=6, min_time=0.02, max_time=1)
    assert [i for i, _ in speed.calls] == [0, 1, 2, 0, 1, 2]
    assert all(s >= 0.002 for _, s in speed.calls)
    assert (4, 3) in seen  # four inputs cycled and zero-padded to the longest
    m = speed.metrics()
    assert set(m) == {
        "latency_p50_ms",
        "latency_p95_ms",
        "throughput_per_s",
        "best_batch_size",
        "throughput_per_batch_size",
        "device",
        "num_threads",
    }
    assert 2 <= m["latency_p50_ms"] <= m["latency_p95_ms"] and m["best_batch_size"] == 4
    assert m["device"].startswith("cpu") and set(m["throughput_per_batch_size"]) == {"1", "4"}
    named = speed.metrics("throughput_ips", per_batch_size=False)
    assert named["throughput_ips"] == m["throughput_per_s"]
    assert "throughput_per_batch_size" not in named
    with pytest.raises(ValueError, match="inputs"):
        measure(fn, [])
