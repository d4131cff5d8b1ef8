"""Progress of long work (`liveml.core.progress`): plain periodic lines when stderr is a pipe or
a file, a live bar on a terminal, and no line printed twice: in the reporter itself, in a
training run through Hydra (Lightning's INFO lines too) and in a pipeline stage."""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from liveml.core import progress
from liveml.core.progress import Progress, duration, track

from tinyrepo import run


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch):
    """Decide the mode from the stream, as for a user (the CI may set LIVEML_PROGRESS)."""
    monkeypatch.delenv("LIVEML_PROGRESS", raising=False)
    monkeypatch.delenv("LIVEML_PROGRESS_SECONDS", raising=False)


def repeated(lines: list[str]) -> dict[str, int]:
    return {line: n for line, n in Counter(lines).items() if n > 1}


def test_duration_reads_like_a_person_says_it():
    assert duration(0.4) == "0 s" and duration(45) == "45 s"
    assert duration(125) == "2 min 5 s" and duration(600) == "10 min"
    assert duration(3600 + 180) == "1 h 3 min" and duration(7200) == "2 h"


def test_lines_on_a_pipe_come_periodically_with_eta_and_close_once():
    out = io.StringIO()  # not a terminal
    with Progress("train demo", 4, item="epoch", stream=out, every_s=0.05) as p:
        assert p.mode == "lines"
        for epoch in range(1, 5):
            time.sleep(0.25)
            p.update(epoch, f"epoch {epoch}/4")
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4, lines
    assert all(line.startswith("train demo: ") for line in lines)
    assert any(re.search(r"epoch 2/4, \d+ s elapsed, ~\d+ s left", line) for line in lines)
    assert re.fullmatch(r"train demo: epoch 4/4, done in \d+ s", lines[-1])
    assert repeated(lines) == {}  # the state did not change between two ticks: no new line


def test_unknown_total_and_watched_count():
    out = io.StringIO()
    files = []
    with Progress(
        "generate demo", item="files", watch=lambda: len(files), stream=out, every_s=0.05
    ):
        for _ in range(3):
            files.append(1)
            time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"generate demo: [123] files, \d+ s elapsed", x) for x in lines), lines
    assert lines[-1].startswith("generate demo: 3 files, done in")
    assert repeated(lines) == {}


def test_failure_and_prefix_and_track(monkeypatch):
    out = io.StringIO()
    with pytest.raises(KeyError), Progress("evaluate demo", stream=out, every_s=60):
        raise KeyError("x")
    assert re.fullmatch(r"evaluate demo: failed after \d+ s\n", out.getvalue())

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress.prefixed("job 2/5"):
        assert list(track(range(3), "train demo", item="step")) == [0, 1, 2]
    assert re.fullmatch(r"job 2/5: train demo: step 3/3, done in \d+ s\n", err.getvalue())
    # Leaving the loop early is no failure.
    for _ in track(range(3), "scan demo"):
        break
    assert "failed" not in err.getvalue()


def test_off_prints_nothing_and_a_terminal_gets_a_bar(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("LIVEML_PROGRESS", "off")
    with Progress("quiet", 3, stream=out, every_s=0.01) as p:
        p.update(3)
        time.sleep(0.05)
    assert out.getvalue() == ""
    monkeypatch.delenv("LIVEML_PROGRESS")

    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    # A terminal of 24 rows and 100 columns (a new pty has none: tqdm would draw 0 columns).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with open(follower, "w", closefd=True) as tty:
        assert tty.isatty()
        with Progress("bar demo", 3, item="image", stream=tty) as p:
            assert p.mode == "bar"
            p.update(3)
        tty.flush()
        chunks = []
        while select.select([leader], [], [], 0.5)[0]:
            chunks.append(os.read(leader, 65536))
        shown = b"".join(chunks).decode(errors="replace")
    os.close(leader)
    assert "bar demo" in shown and "3/3" in shown and "\r" in shown  # tqdm redraws in place
    assert "done in" not in shown  # the bar is the report: no plain closing line


# --- real processes with stderr to a pipe -----------------------------------------------------


def test_training_through_hydra_piped_reports_epochs_and_prints_each_line_once(
    tiny_trainable, tiny_overrides
):
    """`python -m liveml.training` (Hydra) with output to a pipe: periodic `train defects:
    epoch i/n` lines and Lightning's INFO lines, each printed once (Hydra's root handler and
    Lightning's own handler used to print every Lightning line twice)."""
    root = tiny_trainable.root
    env = {
        **os.environ,
        "LIVEML_ROOT": str(root),
        "LIVEML_PROGRESS_SECONDS": "0.2",
        "WANDB_MODE": "disabled",
    }
    env.pop("WANDB_SERVICE", None)
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", *tiny_overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    ours = [x for x in lines if x.startswith("train defects: ")]
    assert any(re.match(r"train defects: epoch [12]/2.*, \d+ s elapsed", x) for x in ours), lines
    assert re.fullmatch(r"train defects: epoch 2/2, done in \d+ s", ours[-1]), ours
    assert repeated(ours) == {}
    # Lightning's INFO lines (`GPU available: False, used: False`, ...): each exactly once.
    lightning = [x for x in lines if "available:" in x]
    assert lightning and repeated(lightning) == {}, lines
    assert sum("GPU available" in x for x in lines) == 1, lines
    # No tqdm redraws in a pipe.
    assert "\r" not in out.stderr


def test_a_stage_piped_reports_progress_lines(tiny_pipeline: Path, tmp_path: Path):
    """The reference stage (draws, features, the model's view) on a pipe: periodic lines with
    what it is doing, then `done in`; no line twice; stdout keeps the stage's own answer."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    out = run(
        [sys.executable, "-m", "liveml.stages.reference", "defects"],
        root,
        env={"LIVEML_PROGRESS_SECONDS": "0.1"},
    )
    lines = out.stderr.splitlines()
    ours = [x for x in lines if x.startswith("reference defects: ")]
    assert len(ours) >= 2, out.stderr
    assert any(re.search(r"(drawing input|features of input) \d+/\d+", x) for x in ours), ours
    assert re.search(r", done in \d+ s$", ours[-1]), ours
    assert repeated(lines) == {}
    assert " inputs (" in out.stdout and "elapsed" not in out.stdout  # the stage's answer
