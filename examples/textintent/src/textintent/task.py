"""`TextIntentTask`: the whole liveml task contract for short-text intent classification.

Each method is a thin, lazily importing door into this package's modules, so `liveml --help`
stays instant with the task installed. Registered in pyproject.toml under the entry-point
group `liveml.tasks` as `textintent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveml.tasks.base import Example, Headline, Task

from textintent.config import SCENARIOS, NgramBagConfig, TextIntentDataConfig

if TYPE_CHECKING:
    import numpy as np


class TextIntentTask(Task):
    """Customer-support messages -> their intent, one of task.classes (the generator knows
    billing, delivery, returns, account and technical)."""

    name = "textintent"
    model_schema = NgramBagConfig
    data_schema = TextIntentDataConfig
    headline = Headline(metric="accuracy", higher_is_better=True)
    suffixes = ("txt",)
    media_types = frozenset({"text/plain"})
    scenarios = SCENARIOS

    # --- data ----------------------------------------------------------------------------
    def generate(self, cfg: Any, out_dir: Path) -> dict:
        from textintent.synth import generate

        return generate(cfg.data, list(cfg.task.classes), Path(out_dir))

    def validate(self, cfg: Any, data_dir: Path) -> dict:
        from textintent.checks import validate

        return validate(list(cfg.task.classes), Path(data_dir))

    def read_split(self, data_dir: Path, split: str) -> list[Example]:
        from textintent.layout import read_split

        return read_split(Path(data_dir), split)

    def write_split(self, data_dir: Path, split: str, examples: list[Example]) -> None:
        from textintent.layout import write_split

        write_split(Path(data_dir), split, examples)

    # --- training ------------------------------------------------------------------------
    def datamodule(self, cfg: Any, data_dir: Path):
        from textintent.data import TextIntentDataModule

        return TextIntentDataModule(cfg, data_dir)

    def module(self, cfg: Any):
        from textintent.module import TextIntentModule

        return TextIntentModule(cfg)

    # --- release -------------------------------------------------------------------------
    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        from textintent.evaluation import evaluate

        return evaluate(cfg, module, Path(data_dir), Path(plots_dir))

    def deployable(self, module: Any):
        from textintent.model import DeployableIntent

        return DeployableIntent(module.model).eval()

    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        from textintent.evaluation import split_of

        ids, _ = split_of(cfg, Path(data_dir), "test")
        return [ids[i : i + 1] for i in range(min(n, len(ids)))]

    def signature(self, example: Any) -> dict:
        from textintent.model import DeployableIntent

        return DeployableIntent.signature(example)

    def intended_use(self, cfg: Any) -> str:
        return (
            f"textintent: route short customer-support messages in English to one of "
            f"{', '.join(cfg.task.classes)}, for messages like those of the data recipe in "
            "lineage.config.data; a person handles messages it routes with low confidence."
        )

    def plots(self, plots_dir: str) -> list[dict]:
        return [
            {
                f"{plots_dir}/confusion.csv": {
                    "template": "confusion",
                    "x": "predicted",
                    "y": "actual",
                    "title": "textintent: test messages, actual vs predicted intent",
                }
            }
        ]

    # --- serving -------------------------------------------------------------------------
    def predictor(self, runtime: Any, limits: dict):
        from textintent.serving import TextIntentPredictor

        return TextIntentPredictor(runtime, limits)

    # --- monitoring ----------------------------------------------------------------------
    def input_features(self, data: bytes) -> dict[str, float | str]:
        from textintent.monitoring import input_features

        return input_features(data)

    def model_view(self, module: Any, inputs: list[bytes]) -> dict[str, np.ndarray]:
        from textintent.monitoring import model_view

        return model_view(module, inputs)

    def draw_input(self, rng: np.random.Generator, recipe: Any, *, cfg: Any, index: int) -> bytes:
        from textintent.synth import draw_message

        classes = list(cfg.task.classes)
        return draw_message(recipe, classes[index % len(classes)], rng).encode("utf-8")

    def sample_rng(self, seed: int, stream: int, index: int) -> np.random.Generator:
        from textintent.synth import message_rng

        return message_rng(seed, stream, index)

    def drifted_recipe(self, recipe: Any, scenario: str, strength: float) -> Any:
        from textintent.synth import drifted_recipe

        return drifted_recipe(recipe, scenario, strength)

    # --- feedback ------------------------------------------------------------------------
    def ground_truth(self, source_dirs: list[Path]) -> dict[str, dict]:
        from textintent.feedback import ground_truth

        return ground_truth(source_dirs)

    def quality(self, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
        from textintent.evaluation import quality

        return quality(cfg, module, Path(data_dir), split)

    def feedback_rejects(self, data_dir: Path, examples: list[Example]) -> list[str | None]:
        from textintent.feedback import rejects

        return rejects(Path(data_dir), examples)
