"""Speech recognition of spoken commands: eSpeak NG voices, a CTC acoustic model, WER/CER.

The task's whole contract with the framework is `SpeechTask` (see liveml/tasks/base.py); each
method imports its module lazily, so loading the task costs nothing until a feature needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveml.tasks.base import Example, Headline, Task
from liveml.tasks.speech.config import CtcConfig, SpeechDataConfig

if TYPE_CHECKING:
    import numpy as np

# Drift scenarios: recipe changes the monitor must notice (monitoring.drifted_recipe).
SCENARIOS: dict[str, str] = {
    "noisier": "data.conditions.snr_db range lowered by strength dB: 10 = 10 dB more noise",
    "unseen_voices": (
        "strength in [0, 1] = share of clips spoken by the held-out test voices "
        "(data.voices.test) instead of the training voices"
    ),
    "faster": "data.conditions.rate * (1 + strength): 0.3 = speech 30% faster",
}


class SpeechTask(Task):
    name = "speech"
    model_schema = CtcConfig
    data_schema = SpeechDataConfig
    headline = Headline("cer", higher_is_better=False)
    suffixes = ("wav",)
    media_types = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
    scenarios = SCENARIOS

    # --- data ---------------------------------------------------------------------------
    def generate(self, cfg: Any, out_dir: Path) -> dict:
        from liveml.tasks.speech.synth import generate

        return generate(cfg.data, out_dir)

    def validate(self, cfg: Any, data_dir: Path) -> dict:
        from liveml.tasks.speech.checks import validate

        return validate(cfg.data, data_dir)

    def read_split(self, data_dir: Path, split: str) -> list[Example]:
        from liveml.tasks.speech.feedback import read_split

        return read_split(data_dir, split)

    def write_split(self, data_dir: Path, split: str, examples: list[Example]) -> None:
        from liveml.tasks.speech.feedback import write_split

        write_split(data_dir, split, examples)

    # --- training -----------------------------------------------------------------------
    def datamodule(self, cfg: Any, data_dir: Path):
        from liveml.tasks.speech.datamodule import SpeechDataModule

        return SpeechDataModule(cfg, data_dir)

    def module(self, cfg: Any):
        from liveml.tasks.speech.module import SpeechModule

        return SpeechModule(cfg)

    # --- release ------------------------------------------------------------------------
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

    def export_options(self, example: Any) -> dict:
        from liveml.tasks.speech.model import DeployableRecognizer

        # Batch and time are free: clips of any length, any number at once.
        return {"dynamic_axes": dict(DeployableRecognizer.dynamic_axes)}

    def speed_metrics(self, cfg: Any, speed: Any) -> dict:
        from liveml.tasks.speech.evaluation import speed_metrics

        return speed_metrics(speed, int(cfg.data.sample_rate))

    # DVC lists the WER next to the headline CER and the targets' speed figures.
    dvc_metrics = ("wer",)

    def plots(self, plots_dir: str) -> list[dict]:
        # CER per group of each recording condition: evaluate writes cer_by_<condition>.csv
        # with the columns <condition>, cer, clips (speech.evaluation.write_plots).
        conditions = {
            "snr": "SNR range",
            "reverb": "reverberation",
            "accent": "accent",
            "voice": "voice",
            "kind": "utterance kind",
        }
        return [
            {
                f"speech_cer_by_{cond}": {
                    "template": "bar_horizontal",
                    "x": "cer",
                    "y": {f"{plots_dir}/cer_by_{cond}.csv": cond},
                    "title": f"speech: CER by {words} (test split)",
                    "x_label": "character error rate",
                    "y_label": words,
                }
            }
            for cond, words in conditions.items()
        ]

    def intended_use(self, cfg: Any) -> str:
        return (
            "speech: transcribe short spoken commands and digit strings (the vocabulary of "
            "lineage.config.data) from 16 kHz mono recordings, for hands-free control where a "
            "misheard command can be confirmed or undone."
        )

    # --- serving ------------------------------------------------------------------------
    def predictor(self, runtime, limits):
        from liveml.tasks.speech.serving import SpeechPredictor

        return SpeechPredictor(runtime, limits)

    # --- monitoring ---------------------------------------------------------------------
    def input_features(self, data: bytes) -> dict[str, float | str]:
        from liveml.tasks.speech.monitoring import input_features

        return input_features(data)

    def model_view(self, module: Any, inputs: list[bytes]) -> dict:
        from liveml.tasks.speech.monitoring import model_view

        return model_view(module, inputs)

    def draw_input(self, rng: np.random.Generator, recipe: Any, *, cfg: Any, index: int) -> bytes:
        from liveml.tasks.speech.monitoring import draw_input

        return draw_input(recipe, rng)

    def drifted_recipe(self, recipe: Any, scenario: str, strength: float) -> Any:
        from liveml.tasks.speech.monitoring import drifted_recipe

        return drifted_recipe(recipe, scenario, strength)

    # --- feedback -----------------------------------------------------------------------
    def ground_truth(self, source_dirs: list[Path]) -> dict[str, dict]:
        from liveml.tasks.speech.feedback import ground_truth

        return ground_truth(source_dirs)

    def quality(self, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
        from liveml.tasks.speech.feedback import quality

        return quality(cfg, module, data_dir, split)

    def must_hold_out(self, label: dict) -> str | None:
        from liveml.tasks.speech.feedback import must_hold_out

        return must_hold_out(label)

    def feedback_rejects(self, data_dir: Path, examples: list[Example]) -> list[str | None]:
        from liveml.tasks.speech.feedback import feedback_rejects

        return feedback_rejects(data_dir, examples)
