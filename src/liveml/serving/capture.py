"""Request capture for drift monitoring: a sample of requests written to disk, off the hot path.

The request handler calls `Capture.offer()`, which only samples and enqueues; one background
thread hashes, serializes and writes, and keeps the folder under a byte bound by deleting the
oldest records. `iter_captures()` is the reader the drift monitor uses.

Layout: `root/<task>/<YYYY-MM-DD>/<id>.<suffix>` (the input bytes) and `<id>.json` (the record)
next to it. The JSON is written last and is the commit marker: a reader trusts only records with
a JSON, so a process killed mid-write never leaves a record whose input is missing or torn.

One writer per root: two processes capturing into the same root each keep their own byte
count, so give each server worker its own root.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from liveml.core.atomic import atomic_write_bytes, clean_stale_temps

__all__ = ["Capture", "iter_captures"]

log = logging.getLogger(__name__)

# Task and suffix become path components: only simple names, so no "../" or "/" gets through.
_NAME = re.compile(r"[a-z0-9_]{1,64}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Every file of a record starts with its id: "<id>.json", "<id>.<suffix>", and the hidden
# temp files ".<id>.<name>.<pid>-XXXXXXXX.tmp" an atomic write killed midway leaves behind
# (removed at start-up once their writer is gone, see liveml.core.atomic).
_FILE = re.compile(r"\.?(\d{20}-[0-9a-f]{8})\..+")
_RECORD = re.compile(r"(\d{20}-[0-9a-f]{8})\.json")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STOP = object()


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"capture {kind} must match [a-z0-9_]{{1,64}}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Item:
    """One sampled request, as handed from offer() to the writer thread."""

    id: str
    task: str
    day: str
    timestamp: str
    payload: bytes
    suffix: str
    prediction: dict
    model: dict


class Capture:
    """Samples requests into `root`, written by one background thread; bounded to `max_bytes`.

    `sample` is the fraction of offered requests kept (0 never, 1 always); `seed` makes the
    sampling reproducible. At most `queue_size` records wait for the writer: beyond that,
    offers are dropped rather than letting a slow disk slow down or grow the server.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        sample: float,
        max_bytes: int,
        queue_size: int = 256,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be in [0, 1], got {sample!r}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.root = Path(root)
        self.sample = float(sample)
        self.max_bytes = int(max_bytes)
        # Which requests are sampled: no secret depends on it (bandit B311).
        self._rng = random.Random(seed)  # nosec B311
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        # Guards the counters, the RNG and `_closed`; never held during I/O, so offer() only
        # ever waits for a few bytecodes of the writer's bookkeeping.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued or being written: what flush() waits for
        self._closed = False
        self._abandon = False  # set when close() gave up waiting: discard what is left
        self._failing = False  # in a streak of write errors: warn once per streak, not per record
        self._captured = self._dropped = self._pruned = 0
        # Every record on disk as (id, day folder, bytes, file names JSON first), oldest on top.
        self._records: list[tuple[str, str, int, tuple[str, ...]]] = []
        self._bytes = 0
        # Start-up I/O happens here, before serving: a restart must respect the bytes on disk.
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()
        self._prune()
        self._thread = threading.Thread(target=self._run, name="liveml-capture", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------------------------

    def offer(
        self, *, task: str, payload: bytes, suffix: str, prediction: dict, model: dict
    ) -> bool:
        """Maybe capture one request; True when queued. Never does I/O, never waits on the disk.

        Hashing and serialization happen in the writer, so the caller pays for a random draw,
        a clock read and two shallow dict copies (copies because the caller may reuse them).
        """
        _check_name("task", task)
        _check_name("suffix", suffix)
        if suffix == "json":  # "<id>.json" is the record itself
            raise ValueError("capture suffix 'json' is reserved for the record file")
        with self._lock:
            if self._closed:
                return False
            # random() < 1.0 always and < 0.0 never: sample=1 keeps all, sample=0 none.
            if self.sample < 1.0 and not self._rng.random() < self.sample:
                return False
            ns = time.time_ns()
            when = _EPOCH + timedelta(microseconds=ns // 1000)  # exact, unlike ns / 1e9
            item = _Item(
                id=f"{ns:020d}-{uuid.uuid4().hex[:8]}",
                task=task,
                day=when.strftime("%Y-%m-%d"),
                timestamp=when.isoformat(timespec="microseconds"),
                payload=bytes(payload),
                suffix=suffix,
                prediction=dict(prediction),
                model=dict(model),
            )
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._dropped += 1
                return False
            self._pending += 1
            return True

    # -- control ------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """A consistent snapshot: captured/dropped/pruned record counts and bytes under root."""
        with self._lock:
            return {
                "captured": self._captured,
                "dropped": self._dropped,
                "pruned": self._pruned,
                "bytes": self._bytes,
            }

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued is on disk (or dropped); TimeoutError if it is not."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                raise TimeoutError(f"{self._pending} captures still unwritten after {timeout}s")

    def close(self, timeout: float = 5.0) -> None:
        """Flush and stop the writer; idempotent. Later offers return False.

        If the queue does not drain within `timeout`, what is left is counted as dropped:
        shutting a server down must not hang on a slow disk.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        try:
            self.flush(timeout)
        except TimeoutError as exc:
            log.warning("capture: closing without writing everything: %s", exc)
            self._abandon = True
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return  # writer stuck in I/O; it is a daemon thread, so it cannot block exit
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if self._abandon:
                    with self._lock:
                        self._dropped += 1
                else:
                    self._write(item)
            except Exception as exc:  # disk full, permissions...: never let the thread die
                with self._lock:
                    self._dropped += 1
                self._warn(f"capture: dropped a {item.task} record", exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _write(self, item: _Item) -> None:
        input_name = f"{item.id}.{item.suffix}"
        record = {
            "id": item.id,
            "task": item.task,
            "timestamp": item.timestamp,
            "input": input_name,
            "input_sha256": hashlib.sha256(item.payload).hexdigest(),
            "input_bytes": len(item.payload),
            "prediction": item.prediction,
            "model": item.model,
        }
        # Serialized here rather than with atomic_write_json: the bound needs the size first.
        data = (json.dumps(record, indent=2, default=str) + "\n").encode()
        size = len(item.payload) + len(data)
        if size > self.max_bytes:
            # Writing it would prune every other record and still break the bound.
            with self._lock:
                self._dropped += 1
            return
        day = self.root / item.task / item.day
        json_name = f"{item.id}.json"
        try:
            atomic_write_bytes(day / input_name, item.payload)  # input first ...
            atomic_write_bytes(day / json_name, data)  # ... the commit marker last
        except BaseException:
            # Best effort: an input without its JSON is invisible to readers but takes space.
            with contextlib.suppress(OSError):
                (day / input_name).unlink(missing_ok=True)
            raise
        heapq.heappush(self._records, (item.id, str(day), size, (json_name, input_name)))
        with self._lock:
            self._captured += 1
            self._bytes += size
        self._failing = False
        self._prune()

    def _prune(self) -> None:
        """Delete the oldest records until the folder fits in `max_bytes` again."""
        while self._records and self._bytes > self.max_bytes:
            _, day, size, names = heapq.heappop(self._records)
            # JSON first: once it is gone no reader trusts the record, whatever remains.
            for name in names:
                try:
                    Path(day, name).unlink(missing_ok=True)
                except OSError as exc:
                    self._warn(f"capture: could not prune {name}", exc)
            with self._lock:
                self._pruned += 1
                self._bytes -= size
            with contextlib.suppress(OSError):
                Path(day).rmdir()  # succeeds only once the day is empty

    def _scan(self) -> None:
        """Index the records already under root (a previous run's), so the bound holds; the
        temp files of writes a killed process left are removed first."""
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for task_dir in _subdirs(self.root, _NAME):
            for day in _subdirs(task_dir, _DAY):
                if stale := clean_stale_temps(day):
                    log.info(
                        "capture: removed %d temp files of killed writes in %s", len(stale), day
                    )
                for path in day.iterdir():
                    match = _FILE.fullmatch(path.name)
                    if match is None or not path.is_file():
                        continue  # not ours: neither counted nor ever deleted
                    key = (match.group(1), str(day))
                    groups.setdefault(key, []).append((path.name, path.stat().st_size))
        for (rid, day), files in groups.items():
            # The JSON first, so pruning un-commits the record before deleting its input.
            files.sort(key=lambda f: (f[0] != f"{rid}.json", f[0]))
            size = sum(s for _, s in files)
            self._records.append((rid, day, size, tuple(n for n, _ in files)))
            self._bytes += size
        heapq.heapify(self._records)

    def _warn(self, message: str, exc: BaseException) -> None:
        """Log the first error of a streak only: a full disk must not flood the server log."""
        if not self._failing:
            self._failing = True
            log.warning("%s: %s (further errors not logged until a write succeeds)", message, exc)


def _subdirs(parent: Path, pattern: re.Pattern[str]) -> list[Path]:
    try:
        entries = list(parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p for p in entries if pattern.fullmatch(p.name) and p.is_dir()]


def iter_captures(root: str | Path, task: str | None = None) -> Iterator[dict]:
    """Complete capture records, oldest first (all tasks, or one).

    Each is the record dict plus "input_path" (the absolute Path of its input file). Records
    without a JSON (a write cut short) are invisible; those whose input is missing (pruned, or
    deleted by hand) are skipped. A record pruned while iterating may still be yielded, so
    read `input_path` expecting it can vanish.
    """
    root = Path(root).absolute()
    tasks = [root / _check_name("task", task)] if task is not None else _subdirs(root, _NAME)
    found: list[tuple[str, Path]] = []
    for task_dir in tasks:
        for day in _subdirs(task_dir, _DAY):
            try:
                names = [p.name for p in day.iterdir()]
            except FileNotFoundError:  # the writer removed an emptied day meanwhile
                continue
            found.extend((n, day) for n in names if _RECORD.fullmatch(n))
    found.sort()  # ids start with the time in ns: name order is time order
    for name, day in found:
        try:
            record = json.loads((day / name).read_text())
        except (OSError, ValueError):
            continue  # pruned since listed
        rid = name.removesuffix(".json")
        input_name = record.get("input") if isinstance(record, dict) else None
        # Trust only an input named after the record: a record cannot point outside its day.
        if not isinstance(input_name, str) or not re.fullmatch(
            rf"{re.escape(rid)}\.[a-z0-9_]{{1,64}}", input_name
        ):
            continue
        input_path = day / input_name
        if not input_path.is_file():
            continue
        yield {**record, "input_path": input_path}
