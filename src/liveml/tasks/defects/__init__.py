"""Phone-screen defect detection: synthetic photos, an FCOS detector, COCO-style mAP.

The task's whole contract with the framework is `DefectsTask` (see liveml/tasks/base.py); each
method imports its module lazily, so loading the task costs nothing until a feature needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveml.tasks.base import Example, Headline, Task
from liveml.tasks.defects.config import DefectsDataConfig, FcosConfig

if TYPE_CHECKING:
    import numpy as np

# Drift scenarios: recipe changes the monitor must notice (monitoring.drifted_recipe).
SCENARIOS: dict[str, str] = {
    "darker": "data.brightness * (1 - strength): 0.3 = photos 30% darker (strength < 1)",
    "longer_scratches": "data.scratch_length * (1 + strength): 0.5 = scratches 50% longer",
    "blur": "data.blur + 3 * strength: the maximum Gaussian blur sigma grows by 3*strength px",
}


class DefectsTask(Task):
    name = "defects"
    model_schema = FcosConfig
    data_schema = DefectsDataConfig
    headline = Headline("map_50", higher_is_better=True)
    suffixes = ("png", "jpg")
    media_types = frozenset({"image/jpeg", "image/png"})
    scenarios = SCENARIOS

    # --- data ---------------------------------------------------------------------------
    def generate(self, cfg: Any, out_dir: Path) -> dict:
        from liveml.tasks.defects.synth import generate

        return generate(cfg.data, list(cfg.task.classes), out_dir)

    def validate(self, cfg: Any, data_dir: Path) -> dict:
        from liveml.tasks.defects.checks import validate

        return validate(cfg.data, list(cfg.task.classes), data_dir)

    def read_split(self, data_dir: Path, split: str) -> list[Example]:
        from liveml.tasks.defects.feedback import read_split

        return read_split(data_dir, split)

    def write_split(self, data_dir: Path, split: str, examples: list[Example]) -> None:
        from liveml.tasks.defects.feedback import write_split

        write_split(data_dir, split, examples)

    # --- training -----------------------------------------------------------------------
    def datamodule(self, cfg: Any, data_dir: Path):
        from liveml.tasks.defects.datamodule import DefectsDataModule

        return DefectsDataModule(cfg, data_dir)

    def module(self, cfg: Any):
        from liveml.tasks.defects.module import DefectsModule

        return DefectsModule(cfg)

    # --- release ------------------------------------------------------------------------
    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        from liveml.tasks.defects.evaluation import evaluate

        return evaluate(cfg, module, data_dir, plots_dir)

    def deployable(self, module: Any):
        from liveml.tasks.defects.export import as_deployable

        return as_deployable(module.model)

    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        from liveml.tasks.defects.evaluation import load_split

        images, _ = load_split(data_dir, "test")
        return [img.unsqueeze(0) for img in images[:n]]

    def signature(self, example: Any) -> dict:
        from liveml.tasks.defects.export import DeployableDetector

        return DeployableDetector.signature(example)

    def export_options(self, example: Any) -> dict:
        from liveml.tasks.defects.export import export_options

        return export_options(example)

    def speed_metrics(self, cfg: Any, speed: Any) -> dict:
        return speed.metrics("throughput_ips")  # images per second

    # DVC lists the mean mAP next to the headline mAP@0.5 and the targets' speed figures.
    dvc_metrics = ("map",)

    def plots(self, plots_dir: str) -> list[dict]:
        # The classes of conf/task/defects.yaml: one precision-recall curve each (evaluate
        # writes pr/<class>.csv for every class of the run's config).
        curves = {f"{plots_dir}/pr/{c}.csv": "precision" for c in ("scratch", "crack", "spot")}
        return [
            {
                "defects_precision_recall": {
                    "template": "simple",
                    "x": "recall",
                    "y": curves,
                    "title": "defects: precision vs recall per class (test split, IoU 0.5)",
                    "x_label": "recall",
                    "y_label": "precision",
                }
            },
            {
                f"{plots_dir}/confusion.csv": {
                    "template": "confusion",
                    "x": "predicted",
                    "y": "actual",
                    "title": "defects: confusion of boxes matched at IoU 0.5 (test split)",
                    "x_label": "predicted class",
                    "y_label": "actual class",
                }
            },
        ]

    def intended_use(self, cfg: Any) -> str:
        return (
            f"defects: find and box {', '.join(cfg.task.classes)} on phone-screen photos like "
            "those described by the data recipe in lineage.config.data, as a screening aid "
            "whose findings a person reviews."
        )

    # --- serving ------------------------------------------------------------------------
    def predictor(self, runtime, limits):
        from liveml.tasks.defects.serving import DefectsPredictor

        return DefectsPredictor(runtime, limits)

    # --- monitoring ---------------------------------------------------------------------
    def input_features(self, data: bytes) -> dict[str, float | str]:
        from liveml.tasks.defects.monitoring import input_features

        return input_features(data)

    def model_view(self, module: Any, inputs: list[bytes]) -> dict:
        from liveml.tasks.defects.monitoring import model_view

        return model_view(module, inputs)

    def draw_input(self, rng: np.random.Generator, recipe: Any, *, cfg: Any, index: int) -> bytes:
        from liveml.tasks.defects.monitoring import draw_input

        return draw_input(recipe, list(cfg.task.classes), rng, index)

    def sample_rng(self, seed: int, stream: int, index: int) -> np.random.Generator:
        from liveml.tasks.defects.synth import image_rng

        return image_rng(seed, stream, index)

    def drifted_recipe(self, recipe: Any, scenario: str, strength: float) -> Any:
        from liveml.tasks.defects.monitoring import drifted_recipe

        return drifted_recipe(recipe, scenario, strength)

    # --- feedback -----------------------------------------------------------------------
    def ground_truth(self, source_dirs: list[Path]) -> dict[str, dict]:
        from liveml.tasks.defects.feedback import ground_truth

        return ground_truth(source_dirs)

    def quality(self, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
        from liveml.tasks.defects.feedback import quality

        return quality(cfg, module, data_dir, split)

    def feedback_rejects(self, data_dir: Path, examples: list[Example]) -> list[str | None]:
        from liveml.tasks.defects.feedback import feedback_rejects

        return feedback_rejects(data_dir, examples)
