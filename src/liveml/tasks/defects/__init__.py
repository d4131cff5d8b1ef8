"""Phone-screen defect detection: synthetic photos, an FCOS detector, COCO-style mAP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liveml.tasks.base import Task
from liveml.tasks.defects.config import DefectsDataConfig, FcosConfig


class DefectsTask(Task):
    name = "defects"
    model_schema = FcosConfig
    data_schema = DefectsDataConfig

    def generate(self, cfg: Any, out_dir: Path) -> dict:
        from liveml.tasks.defects.synth import generate

        return generate(cfg.data, list(cfg.task.classes), out_dir)

    def validate(self, cfg: Any, data_dir: Path) -> dict:
        from liveml.tasks.defects.checks import validate

        return validate(cfg.data, list(cfg.task.classes), data_dir)

    def datamodule(self, cfg: Any, data_dir: Path):
        from liveml.tasks.defects.datamodule import DefectsDataModule

        return DefectsDataModule(cfg, data_dir)

    def module(self, cfg: Any):
        from liveml.tasks.defects.module import DefectsModule

        return DefectsModule(cfg)

    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        from liveml.tasks.defects.evaluation import evaluate

        return evaluate(cfg, module, data_dir, plots_dir)

    def deployable(self, module: Any):
        from liveml.release.export import as_deployable

        return as_deployable(module.model)

    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        from liveml.tasks.defects.evaluation import load_split

        images, _ = load_split(data_dir, "test")
        return [img.unsqueeze(0) for img in images[:n]]

    def signature(self, example: Any) -> dict:
        from liveml.release.export import DeployableDetector

        return DeployableDetector.signature(example)

    def intended_use(self, cfg: Any) -> str:
        return (
            f"defects: find and box {', '.join(cfg.task.classes)} on phone-screen photos like "
            "those described by the data recipe in lineage.config.data, as a screening aid "
            "whose findings a person reviews."
        )

    # Placeholders until the contract refactor lands (helper work in progress).
    def read_split(self, data_dir, split):
        raise NotImplementedError

    def write_split(self, data_dir, split, examples):
        raise NotImplementedError

    def predictor(self, runtime, limits):
        from liveml.serving.predictors import PREDICTORS

        return PREDICTORS[self.name](runtime, limits)
