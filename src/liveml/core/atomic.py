"""Atomic writes: a reader (or DVC) sees the old file or the whole new one, never a torn one.

Each write goes to a temp sibling ".<name>.<pid>-<random>.tmp" that is renamed over the target.
A writer killed midway leaves that sibling behind; the first atomic write of a process into a
folder removes the ones whose writer is gone (`clean_stale_temps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_public(path: str | os.PathLike, mode: int) -> None:
    """Give a temp entry the usual permissions: mkstemp/mkdtemp make them private (0600/0700)."""
    os.chmod(path, mode & ~_umask())


# A temp sibling: ".<name>.<pid>-<8 random chars>.tmp" (the random part is mkstemp's).
_TEMP = re.compile(r"\..+\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp")
# What versions before the pid was added wrote: ".<name>.<8 random chars>.tmp".
_LEGACY_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
# A temp sibling this old whose writer process is gone is debris. The age guards against pid
# reuse races and against a writer on another machine sharing the folder.
STALE_AFTER_S = 60.0
# Debris of older versions carries no pid: it goes once it is a day old.
LEGACY_STALE_AFTER_S = 86_400.0

_swept: set[str] = set()  # folders this process has cleaned already


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # another user's process, or a pid we cannot ask about: keep its files
    return True


def clean_stale_temps(
    folder: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the temp files and folders that killed atomic writes left in `folder`: those
    older than `older_than_s` whose writer process no longer runs (older versions' temps, which
    name no process, once a day old). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is not None:
            if _pid_alive(int(match["pid"])):
                continue
            min_age = older_than_s
        elif _LEGACY_TEMP.fullmatch(entry.name):
            min_age = max(older_than_s, LEGACY_STALE_AFTER_S)
        else:
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another process cleaned it meanwhile
        except OSError:
            continue  # not ours to remove (permissions): leave it
        removed.append(Path(entry.path))
    return removed


def sweep_once(folder: Path) -> None:
    """Clean `folder` of stale temps the first time this process writes into it."""
    key = os.fspath(folder)
    if key not in _swept:
        _swept.add(key)
        with contextlib.suppress(OSError):
            clean_stale_temps(folder)


def temp_dir_for(path: str | os.PathLike) -> Path:
    """A new temp folder beside `path`, named as this module's temps are (so a killed writer's
    is recognised and cleaned); the folder's stale temps are cleaned first, once per process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_once(path.parent)
    return Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        make_public(tmp_path, 0o666)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder in a temp sibling, then swap it in: a killed writer leaves no half."""
    path = Path(path)
    tmp = temp_dir_for(path)
    try:
        yield tmp
        make_public(tmp, 0o777)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable) -> None:
    """Write a CSV (header + rows, `\\n` line ends: what DVC plots read) atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
