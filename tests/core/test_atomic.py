"""Atomic writes: whole files and folders or nothing, and the debris of killed writers cleaned.

Killed writers are real processes killed with SIGKILL in the middle of a write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from liveml.core import atomic
from liveml.core.atomic import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    clean_stale_temps,
)

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from liveml.core.atomic import atomic_dir, atomic_path

    folder = Path(sys.argv[1])
    with atomic_path(folder / "model.bin") as tmp:
        tmp.write_bytes(b"half a model")
        with atomic_dir(folder / "export") as d:
            (d / "model.onnx").write_bytes(b"half an export")
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def killed_writer(folder: Path) -> list[Path]:
    """Run a writer that is killed midway through an atomic file and an atomic folder write;
    returns the temp entries it left in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder)], check=False)
    assert run.returncode == -9
    left = sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))
    assert len(left) == 2, left
    assert not (folder / "model.bin").exists() and not (folder / "export").exists()
    return left


def age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for p in paths:
        os.utime(p, (then, then))


def test_a_killed_writer_leaves_only_temp_siblings_that_name_it(tmp_path):
    left = killed_writer(tmp_path)
    # ".<name>.<pid>-<random>.tmp": the pid says whose they are.
    assert {p.name.split(".")[1] for p in left} == {"export", "model"}
    assert all(atomic._TEMP.fullmatch(p.name) for p in left)


def test_the_next_writer_removes_stale_temps_of_dead_writers(tmp_path):
    folder = tmp_path / "out"
    left = killed_writer(folder)
    age(left, 120)
    atomic_write_json(folder / "metrics.json", {"ok": 1})  # the first write into the folder
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]


def test_fresh_temps_and_temps_of_live_writers_are_kept(tmp_path):
    fresh = killed_writer(tmp_path / "fresh")  # dead writer, but under a minute old
    assert clean_stale_temps(tmp_path / "fresh") == []
    assert all(p.exists() for p in fresh)
    # This process is alive: its temps are never removed, however old.
    live = tmp_path / "live"
    live.mkdir()
    mine = live / f".model.bin.{os.getpid()}-abcd1234.tmp"
    mine.write_bytes(b"being written")
    age([mine], 3600)
    assert clean_stale_temps(live) == [] and mine.exists()
    # Not a temp of ours: never touched.
    other = live / ".notes.tmp"
    other.write_text("x")
    age([other], 10**6)
    assert clean_stale_temps(live) == [] and other.exists()


def test_temps_of_older_versions_go_once_a_day_old(tmp_path):
    legacy = tmp_path / ".run.json.k2j3h4l1.tmp"  # no pid in the name
    legacy.write_text("{")
    age([legacy], 3600)
    assert clean_stale_temps(tmp_path) == [] and legacy.exists()
    age([legacy], 2 * 86400)
    assert clean_stale_temps(tmp_path) == [legacy] and not legacy.exists()


def test_atomic_writes_replace_whole(tmp_path):
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("2")
        raise RuntimeError("killed midway")
    assert (tmp_path / "d" / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]
