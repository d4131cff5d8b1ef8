"""Shared fixtures of the defects task: a tiny generated dataset, as real files, for any test.

- `defects_classes`: the task's classes, read from conf/task/defects.yaml.
- `tiny_data_cfg`: the tiny recipe (64 px photos, 24/8/8 images) as a typed DictConfig.
- `tiny_recipe(overrides=None)`: a callable fixture: that recipe with dotted-key overrides.
- `make_defects_data(out_dir, overrides=None)`: generate the tiny recipe, changed by dotted
  `overrides` such as {"seed": 1, "brightness": 0.7}, into `out_dir`; returns it.
- `tiny_defects_data`: a private copy of the tiny dataset in tmp_path (generated once per
  session, copied per test, so a test may corrupt its copy freely); returns its folder.
- `defects_cfg(*overrides)`: the repo's conf/ composed for the defects task (session-wide, no
  project writes), with Hydra overrides such as "data.image_size=64".
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from liveml.tasks.defects.config import DefectsDataConfig
from liveml.tasks.defects.synth import generate

REPO = Path(__file__).resolve().parents[3]
TINY_RECIPE = {"seed": 0, "image_size": 64, "n_train": 24, "n_val": 8, "n_test": 8}


def _tiny_recipe(overrides: dict[str, Any] | None = None) -> DictConfig:
    """conf/data/defects.yaml shrunk to TINY_RECIPE, as a typed config, with dotted-key
    overrides applied."""
    cfg = OmegaConf.merge(
        OmegaConf.structured(DefectsDataConfig),
        OmegaConf.load(REPO / "conf/data/defects.yaml"),
        TINY_RECIPE,
    )
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=False)
    return cfg


@pytest.fixture(scope="session")
def defects_classes() -> list[str]:
    return list(yaml.safe_load((REPO / "conf/task/defects.yaml").read_text())["classes"])


@pytest.fixture(scope="session")
def tiny_recipe() -> Callable[..., DictConfig]:
    return _tiny_recipe


@pytest.fixture
def tiny_data_cfg() -> DictConfig:
    return _tiny_recipe()


@pytest.fixture(scope="session")
def make_defects_data(defects_classes) -> Callable[..., Path]:
    def make(out_dir: Path, overrides: dict[str, Any] | None = None) -> Path:
        generate(_tiny_recipe(overrides), defects_classes, Path(out_dir))
        return Path(out_dir)

    return make


@pytest.fixture(scope="session")
def _tiny_defects_master(tmp_path_factory, make_defects_data) -> Path:
    return make_defects_data(tmp_path_factory.mktemp("defects_master") / "data")


@pytest.fixture
def tiny_defects_data(tmp_path, _tiny_defects_master) -> Path:
    return Path(shutil.copytree(_tiny_defects_master, tmp_path / "defects_data"))


@pytest.fixture(scope="session")
def defects_cfg() -> Callable[..., DictConfig]:
    from liveml.core.config import compose
    from liveml.core.project import Project

    def make(*overrides: str) -> DictConfig:
        return compose(["task=defects", *overrides], project=Project(REPO))

    return make
