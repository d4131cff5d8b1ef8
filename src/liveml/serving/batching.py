"""Dynamic batching: concurrent requests share one model call, each gets its own answer back.

One worker per model takes what is queued (up to `max_batch`), waits up to `max_wait_ms` for
more only while other requests are still being decoded (so a lone request is not delayed),
and runs the batch on the given executor (the server's one inference thread). Items with
different keys (e.g. audio clips of different lengths) run as separate calls of one cycle.
When a batch call fails, its items are retried one by one, so one bad input never fails the
others. The queue is bounded: a full queue raises `QueueFull` at once (the server answers
503 + Retry-After) instead of growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any


class QueueFull(Exception):
    """The batch queue is at capacity; the client should retry later."""


class Batcher:
    """Batches `submit(item, key)` calls into `run(items) -> results` calls of one key."""

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        executor: Executor,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError(
                f"batching needs max_batch >= 1, queue_size >= 1, max_wait_ms >= 0; got "
                f"{max_batch}, {queue_size}, {max_wait_ms}"
            )
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._decoding = 0  # requests accepted but not yet submitted
        self._arrived: asyncio.Event | None = None
        # The caller's inference thread: calls never overlap, torch/ORT use the cores inside.
        self._pool = executor

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue and not self._queue.empty():
            _, _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(QueueFull("server is shutting down"))

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way (being read and decoded): the worker may wait for it."""
        self._decoding += 1
        try:
            yield
        finally:
            self._decoding -= 1
            if self._arrived is not None:
                self._arrived.set()  # a request that failed to decode ends the wait too

    async def submit(self, item: Any, key: Any = None) -> Any:
        """The result of `item`; raises QueueFull at once when the queue is at capacity."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((key, item, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue_size} requests are already queued") from None
        self._arrived.set()
        return await fut

    async def _collect(self) -> list[tuple[Any, Any, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.monotonic()
            if left <= 0 or self._decoding == 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Any, list[tuple[Any, asyncio.Future]]] = {}
            for key, item, fut in batch:
                if not fut.done():  # a client that went away has cancelled its future
                    groups.setdefault(key, []).append((item, fut))
            for members in groups.values():
                items = [item for item, _ in members]
                start = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._pool, self._run, items)
                except Exception:
                    results = await loop.run_in_executor(self._pool, self._one_by_one, items)
                if self._on_batch:
                    self._on_batch(len(items), time.perf_counter() - start)
                for (_, fut), result in zip(members, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, _Failed):
                        fut.set_exception(result.error)
                    else:
                        fut.set_result(result)

    def _one_by_one(self, items: list[Any]) -> list[Any]:
        results = []
        for item in items:
            try:
                results.append(self._run([item])[0])
            except Exception as e:
                results.append(_Failed(e))
        return results


class _Failed:
    """A per-item failure carried back from the inference thread."""

    def __init__(self, error: Exception):
        self.error = error
