"""Shared fixtures of the speech task: a tiny generated dataset, as real files, for any test.

- `tiny_speech_recipe(overrides=None)`: the tiny recipe (few voices, 24/8/8 clips) as a typed
  DictConfig, with dotted-key overrides such as {"seed": 1, "conditions.snr_db": [5, 5]}.
- `make_speech_data(out_dir, overrides=None)`: generate that recipe into `out_dir`.
- `tiny_speech_data`: a private copy of the tiny dataset in tmp_path (generated once per
  session, copied per test, so a test may corrupt its copy freely); returns its folder.
- `speech_cfg(*overrides)`: the repo's conf/ composed for the speech task (session-wide, no
  project writes), with Hydra overrides such as "model.rnn_hidden=16".
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from liveml.tasks.speech.config import SpeechDataConfig
from liveml.tasks.speech.synth import generate

REPO = Path(__file__).resolve().parents[3]
TINY_SPEECH = {"seed": 0, "n_train": 24, "n_val": 8, "n_test": 8}


def _tiny_recipe(overrides: dict[str, Any] | None = None) -> DictConfig:
    """conf/data/speech.yaml shrunk to TINY_SPEECH, with dotted-key overrides applied."""
    cfg = OmegaConf.merge(
        OmegaConf.structured(SpeechDataConfig),
        OmegaConf.load(REPO / "conf/data/speech.yaml"),
        TINY_SPEECH,
    )
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=False)
    return cfg


@pytest.fixture(scope="session")
def tiny_speech_recipe() -> Callable[..., DictConfig]:
    return _tiny_recipe


@pytest.fixture(scope="session")
def make_speech_data() -> Callable[..., Path]:
    def make(out_dir: Path, overrides: dict[str, Any] | None = None) -> Path:
        generate(_tiny_recipe(overrides), Path(out_dir))
        return Path(out_dir)

    return make


@pytest.fixture(scope="session")
def _speech_data_master(tmp_path_factory, make_speech_data) -> Path:
    return make_speech_data(tmp_path_factory.mktemp("speech-data") / "raw")


@pytest.fixture
def tiny_speech_data(tmp_path, _speech_data_master) -> Path:
    return Path(shutil.copytree(_speech_data_master, tmp_path / "speech-raw"))


@pytest.fixture(scope="session")
def speech_cfg() -> Callable[..., DictConfig]:
    from liveml.core.config import compose
    from liveml.core.project import Project

    def make(*overrides: str) -> DictConfig:
        return compose(["task=speech", *overrides], project=Project(REPO))

    return make
