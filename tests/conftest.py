"""Shared fixtures: a throw-away liveml project (a copy of conf/) and a tiny, fast config."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from liveml.core.project import Project

REPO = Path(__file__).resolve().parents[1]

# numpy's BLAS threads on top of torch's: on 2 shared cores they only fight (the drift tests'
# matrix products measured 4x slower under load). Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Never talk to the W&B servers from tests; offline runs still write their local files.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

# A config that trains in a few seconds on 2 CPU cores.
TINY = [
    "data.image_size=64",
    "data.n_train=16",
    "data.n_val=8",
    "data.n_test=8",
    "model.channels=[8,16,16,32]",
    "model.fpn_channels=32",
    "model.head_convs=1",
    "model.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    # One intra-op thread: on a busy 2-core machine, 2 spinning threads run 10-30x slower.
    "trainer.num_threads=1",
]


def make_project(root: Path) -> Project:
    """A liveml project at `root`: a copy of this repo's conf/ and lock file (not a git repo)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copyfile(REPO / "requirements.lock", root / "requirements.lock")
    return Project(root)


def generate_once(tmp_path_factory, overrides: list[str]) -> Path:
    """The dataset of the config `overrides` compose to, generated into a fresh folder."""
    from liveml.core.config import compose
    from liveml.tasks import get_task

    project = make_project(tmp_path_factory.mktemp("tiny-data") / "proj")
    cfg = compose(overrides, project=project)
    out = project.path(cfg.paths.data)
    get_task(cfg.task.name).generate(cfg, out)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny config's dataset, generated once per session (copied into each project)."""
    return generate_once(tmp_path_factory, TINY)


@pytest.fixture
def tiny_overrides() -> list[str]:
    """TINY as command-line overrides (for subprocesses such as `python -m liveml.training`)."""
    return list(TINY)


@pytest.fixture
def tiny_project(tmp_path) -> Project:
    """A fresh project under tmp_path (no data)."""
    return make_project(tmp_path / "proj")


@pytest.fixture
def tiny_cfg(tiny_project):
    """Factory: `tiny_cfg("trainer.max_epochs=3", ...)` composes the project's conf/ with TINY
    plus the overrides; every path (data, checkpoints, runs, W&B) is inside the project."""
    from liveml.core.config import compose

    def make(*overrides: str):
        return compose([*TINY, *overrides], project=tiny_project)

    return make


@pytest.fixture
def tiny_trainable(tiny_project, tiny_cfg, tiny_data) -> Project:
    """`tiny_project` with the tiny dataset at its `paths.data`."""
    dest = tiny_project.path(tiny_cfg().paths.data)
    shutil.copytree(tiny_data, dest)
    return tiny_project


# The speech task's tiny config: a few clips, a narrow one-layer recognizer.
TINY_SPEECH = [
    "task=speech",
    "data.n_train=16",
    "data.n_val=8",
    "data.n_test=8",
    "model.rnn_hidden=32",
    "model.rnn_layers=1",
    "model.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_threads=1",
]


@pytest.fixture(scope="session")
def tiny_speech_data_dir(tmp_path_factory) -> Path:
    """TINY_SPEECH's dataset, generated once per session (copied into each project)."""
    return generate_once(tmp_path_factory, TINY_SPEECH)


@pytest.fixture
def tiny_speech_cfg(tiny_project):
    """Factory like `tiny_cfg`, for the speech task."""
    from liveml.core.config import compose

    def make(*overrides: str):
        return compose([*TINY_SPEECH, *overrides], project=tiny_project)

    return make


@pytest.fixture
def tiny_speech_trainable(tiny_project, tiny_speech_cfg, tiny_speech_data_dir) -> Project:
    """`tiny_project` with the tiny speech dataset at its `paths.data`."""
    shutil.copytree(tiny_speech_data_dir, tiny_project.path(tiny_speech_cfg().paths.data))
    return tiny_project


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A git + DVC copy of this repo with tiny recipes, after `dvc repro` of both tasks (about
    a minute): trained, evaluated and exported models. Copy it before changing it."""
    from tinyrepo import build

    return build(tmp_path_factory.mktemp("tiny-pipeline") / "repo")
