"""Shared fixtures: the task's config composed by liveml (Hydra, with liveml's packaged
trainer/logger/paths/monitor groups) from this package's own conf/ in a throw-away project,
and a tiny dataset made from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"
# Small, quick and still learnable: what the tests train on.
SMALL = ["data.n_train=200", "data.n_val=25", "data.n_test=100"]
CONFIG_YAML = """\
defaults:
  - task: textintent
  - model: ${task}
  - data: ${task}
  - trainer: ${task}
  - logger: wandb
  - paths: default
  - monitor: default
  - _self_
seed: 0
"""


def make_project(root: Path) -> Path:
    """A minimal liveml project at `root`: this package's conf/ groups plus a config.yaml."""
    shutil.copytree(CONF, root / "conf", dirs_exist_ok=True)
    (root / "conf" / "config.yaml").write_text(CONFIG_YAML)
    return root


def make_cfg(project: Path, *overrides: str):
    """The checked config of the task as `python -m liveml.training` would compose it."""
    from liveml.core.config import compose
    from liveml.core.project import Project

    return compose([*SMALL, *overrides], project=Project(project))


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def task():
    from liveml.tasks import get_task

    return get_task("textintent")  # through the entry point, as liveml finds it


@pytest.fixture(scope="session")
def cfg(project):
    return make_cfg(project)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, task, cfg) -> Path:
    out = tmp_path_factory.mktemp("data")
    task.generate(cfg, out)
    return out
