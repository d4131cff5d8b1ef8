"""The dynamic batcher on its own: batches form, results stay apart, failures stay local."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from liveml.serving.batching import Batcher, QueueFull


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """A model stand-in that doubles numbers, records its batches, and fails on negatives."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait()
        time.sleep(self.delay)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [2 * i for i in items]


INFER = ThreadPoolExecutor(1, thread_name_prefix="infer")


def batcher_of(model, **settings) -> Batcher:
    return Batcher(model, executor=INFER, **settings)


async def _with(batcher: Batcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_concurrent_items_share_batches_and_get_their_own_results():
    model = Recorder(delay=0.02)
    batcher = batcher_of(model, max_batch=8, max_wait_ms=5, queue_size=64)

    async def body():
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    results = run(_with(batcher, body))
    assert results == [2 * i for i in range(20)]
    assert max(len(b) for b in model.batches) > 1
    assert all(len(b) <= 8 for b in model.batches)
    assert sorted(i for b in model.batches for i in b) == list(range(20))


def test_a_lone_request_is_not_held_for_max_wait():
    model = Recorder()
    batcher = batcher_of(model, max_batch=8, max_wait_ms=2000, queue_size=8)

    async def body():
        start = time.perf_counter()
        await batcher.submit(1)
        return time.perf_counter() - start

    # Nobody else is being decoded, so the 2 s max wait does not apply.
    assert run(_with(batcher, body)) < 1.0


def test_the_worker_waits_for_requests_still_being_decoded():
    model = Recorder()
    batcher = batcher_of(model, max_batch=8, max_wait_ms=500, queue_size=8)

    async def body():
        # A request still being decoded while the first is queued joins its batch.
        with batcher.incoming():
            first = asyncio.create_task(batcher.submit(0))
            await asyncio.sleep(0.05)
            return await asyncio.gather(first, batcher.submit(1))

    assert run(_with(batcher, body)) == [0, 2]
    assert model.batches == [[0, 1]]


def test_keys_never_share_a_model_call():
    model = Recorder()
    batcher = batcher_of(model, max_batch=16, max_wait_ms=0, queue_size=64)

    async def body():
        model.gate.clear()  # hold the model so everything queues up behind the first call
        first = asyncio.create_task(batcher.submit(100, key="a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(i, key=i % 2)) for i in range(6)]
        await asyncio.sleep(0.05)
        model.gate.set()
        return await asyncio.gather(first, *rest)

    assert run(_with(batcher, body)) == [200, 0, 2, 4, 6, 8, 10]
    assert model.batches[0] == [100]
    assert sorted(map(sorted, model.batches[1:])) == [[0, 2, 4], [1, 3, 5]]


def test_one_failing_item_fails_alone():
    model = Recorder()
    batcher = batcher_of(model, max_batch=16, max_wait_ms=0, queue_size=64)

    async def body():
        model.gate.clear()
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in (1, -1, 3)]
        await asyncio.sleep(0.05)
        model.gate.set()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    zero, one, bad, three = run(_with(batcher, body))
    assert (zero, one, three) == (0, 2, 6)
    assert isinstance(bad, ValueError)
    # The shared call failed, then each item ran alone.
    assert [1, -1, 3] in model.batches and [1] in model.batches and [3] in model.batches


def test_a_full_queue_refuses_at_once():
    model = Recorder()
    batcher = batcher_of(model, max_batch=1, max_wait_ms=0, queue_size=2)

    async def body():
        model.gate.clear()
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)  # taken by the worker, blocked in the model
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit(3)
        model.gate.set()
        return await asyncio.gather(running, *queued)

    assert run(_with(batcher, body)) == [0, 2, 4]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="max_batch"):
        batcher_of(Recorder(), max_batch=0, max_wait_ms=0, queue_size=1)
