"""Progress of long work (training, data generation, evaluation, reference building, monitoring,
sweeps), one concept for all of them: `Progress`.

On a terminal it is a live bar (tqdm, on stderr). When stderr is not a terminal (`make repro >
log`, CI, a DVC stage's captured output) it prints a plain line every few seconds instead, such
as `train mytask: epoch 3/30, 45 s elapsed, ~5 min left`, and one closing line; a line equal to
the previous one is never printed again. Everything goes to stderr, so stdout stays the
command's answer (JSON, tables).

Environment: `LIVEML_PROGRESS` = `bar` | `lines` | `off` forces a mode (default: `bar` on a
terminal, else `lines`); `LIVEML_PROGRESS_SECONDS` sets the seconds between plain lines
(default 30).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

MODES = ("bar", "lines", "off")
DEFAULT_SECONDS = 30.0
# What every label starts with meanwhile (`prefixed`): the job of a sweep, say.
_prefix: list[str] = []


@contextlib.contextmanager
def prefixed(prefix: str | None) -> Iterator[None]:
    """Within the block, labels read `<prefix>: <label>` (e.g. `job 3/20: train mytask`)."""
    if not prefix:
        yield
        return
    _prefix.append(prefix)
    try:
        yield
    finally:
        _prefix.pop()


def mode(stream: IO[str] | None = None) -> str:
    """How progress is shown on `stream` (stderr): `LIVEML_PROGRESS`, else `bar` on a terminal
    and `lines` otherwise."""
    forced = os.environ.get("LIVEML_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "lines"


def interval() -> float:
    """Seconds between plain progress lines (`LIVEML_PROGRESS_SECONDS`, default 30)."""
    raw = os.environ.get("LIVEML_PROGRESS_SECONDS")
    try:
        value = float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        value = DEFAULT_SECONDS
    return value if math.isfinite(value) and value > 0 else DEFAULT_SECONDS


def duration(seconds: float) -> str:
    """`45 s`, `2 min 5 s`, `1 h 3 min`: a duration the way people read it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s} s" if s and m < 10 else f"{m} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m} min" if m else f"{h} h"


class Progress:
    """One piece of long work. `total` units (None: unknown); `item` names a unit, shown as
    `<item> <done>/<total>` (e.g. `epoch 3/30`, `input 120/1000`).

    Report with `update(done)` / `advance(n)`, or pass `watch`, a function returning the units
    done that is polled while an opaque call runs (e.g. files written by a generator). Use it as
    a context manager: leaving it prints the closing line (`done in ...`, or `failed after ...`).
    """

    def __init__(
        self,
        label: str,
        total: float | None = None,
        *,
        item: str = "",
        watch: Callable[[], float] | None = None,
        stream: IO[str] | None = None,
        every_s: float | None = None,
        initial: float = 0.0,
    ):
        self.label = ": ".join([*_prefix, label])
        self.total = total if total is None or total > 0 else None
        self.item = item
        self.watch = watch
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s if every_s is not None else interval()
        self.mode = mode(self.stream)
        # Units done before this process started (a resumed run): not counted for the rate.
        self.initial = float(initial)
        self.done: float = self.initial
        self.text: str | None = None
        self.start = time.monotonic()
        self.last_line: str | None = None
        self.closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=self.label,
                unit=f" {item}" if item else "it",
                initial=initial,
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
            )
        if self.mode != "off" and (self.mode == "lines" or watch is not None):
            self._thread = threading.Thread(target=self._tick, name="liveml-progress", daemon=True)
            self._thread.start()

    # --- reporting -------------------------------------------------------------------------

    def update(self, done: float, text: str | None = None) -> None:
        """`done` units so far (may be fractional: 2.5 epochs); `text` replaces the default
        `<item> <done>/<total>` part of the line."""
        with self._lock:
            self.done, self.text = float(done), text
            if self._bar is not None:
                self._bar.n = done if self.total is None else min(done, self.total)
                if text:
                    self._bar.set_postfix_str(text, refresh=False)
                self._bar.refresh()

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n, self.text)

    def line(self) -> str:
        """The plain line of the current state."""
        elapsed = time.monotonic() - self.start
        parts = [self.text or self._count()]
        parts.append(f"{duration(elapsed)} elapsed")
        if self.total and self.initial < self.done < self.total:
            left = elapsed * (self.total - self.done) / (self.done - self.initial)
            parts.append(f"~{duration(left)} left")
        return f"{self.label}: " + ", ".join(p for p in parts if p)

    def _count(self) -> str:
        done = int(self.done) if float(self.done).is_integer() else round(self.done, 1)
        if self.total is None:
            return f"{done} {self.item}".strip() if self.item else ""
        total = int(self.total) if float(self.total).is_integer() else self.total
        return f"{self.item} {done}/{total}".strip()

    def _emit(self, text: str) -> None:
        if text == self.last_line:
            return
        self.last_line = text
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe: progress is never worth a crash
            self._stop.set()

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.watch is not None:
                try:
                    seen = float(self.watch())
                except Exception:  # a watched folder mid-rename, say: skip this look
                    seen = None
                if seen is not None:
                    self.update(seen, self.text)
            if self.mode == "lines":
                with self._lock:
                    self._emit(self.line())

    # --- closing ---------------------------------------------------------------------------

    def close(self, failed: bool = False) -> None:
        """Stop reporting; in `lines` mode print `done in ...` (or `failed after ...`)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.watch is not None:  # the final count, not the last tick's
            with contextlib.suppress(Exception):
                self.update(float(self.watch()), self.text)
        if self._bar is not None:
            self._bar.close()
        if self.mode == "lines":
            took = duration(time.monotonic() - self.start)
            what = self.text or self._count()
            end = f"failed after {took}" if failed else f"done in {took}"
            with self._lock:
                self._emit(f"{self.label}: {what + ', ' if what else ''}{end}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving a `track` loop early (GeneratorExit) is no failure.
        self.close(failed=exc_type is not None and not issubclass(exc_type, GeneratorExit))


def track(iterable, label: str, total: int | None = None, *, item: str = ""):
    """Iterate `iterable` reporting each element as one unit of `Progress(label, total)`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(label, total, item=item) as progress:
        for n, value in enumerate(iterable, 1):
            yield value
            progress.update(n)


def count_files(folder: os.PathLike | str) -> Callable[[], int]:
    """A `watch` function: the number of files under `folder` (0 while it does not exist)."""
    from pathlib import Path

    root = Path(folder)

    def count() -> int:
        if not root.is_dir():
            return 0
        return sum(len(files) for _, _, files in os.walk(root))

    return count
