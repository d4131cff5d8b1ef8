"""File locks between processes (flock): the kernel drops them when a process dies, so a killed
training or sweep never leaves a stale lock behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, busy: Exception | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing). With `busy`, raise it at once when
    another process holds the lock; without, wait for that process."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            raise busy from None
        yield
