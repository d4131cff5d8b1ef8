"""Speech recognition of spoken commands: eSpeak NG voices, a CTC acoustic model, WER/CER."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liveml.tasks.base import Task
from liveml.tasks.speech.config import CtcConfig, SpeechDataConfig


class SpeechTask(Task):
    name = "speech"
    model_schema = CtcConfig
    data_schema = SpeechDataConfig

    def generate(self, cfg: Any, out_dir: Path) -> dict:
        from liveml.tasks.speech.synth import generate

        return generate(cfg.data, out_dir)

    def validate(self, cfg: Any, data_dir: Path) -> dict:
        from liveml.tasks.speech.checks import validate

        return validate(cfg.data, data_dir)

    def datamodule(self, cfg: Any, data_dir: Path):
        from liveml.tasks.speech.datamodule import SpeechDataModule

        return SpeechDataModule(cfg, data_dir)

    def module(self, cfg: Any):
        from liveml.tasks.speech.module import SpeechModule

        return SpeechModule(cfg)

    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        from liveml.tasks.speech.evaluation import evaluate

        return evaluate(cfg, module, data_dir, plots_dir)

    def deployable(self, module: Any):
        return module.deployable()

    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        from liveml.tasks.speech.evaluation import load_split

        waves, _ = load_split(data_dir, "test")
        return [w.unsqueeze(0) for w in waves[:n]]

    def signature(self, example: Any) -> dict:
        from liveml.tasks.speech.model import DeployableRecognizer

        return DeployableRecognizer.signature(example)

    def intended_use(self, cfg: Any) -> str:
        return (
            "speech: transcribe short spoken commands and digit strings (the vocabulary of "
            "lineage.config.data) from 16 kHz mono recordings, for hands-free control where a "
            "misheard command can be confirmed or undone."
        )

    # Placeholders until the contract refactor lands (helper work in progress).
    def read_split(self, data_dir, split):
        raise NotImplementedError

    def write_split(self, data_dir, split, examples):
        raise NotImplementedError

    def predictor(self, runtime, limits):
        from liveml.serving.predictors import PREDICTORS

        return PREDICTORS[self.name](runtime, limits)
