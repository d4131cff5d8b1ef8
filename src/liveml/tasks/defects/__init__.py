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

    def example_input(self, cfg: Any):
        import torch

        size = cfg.data.image_size
        return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


TASK = DefectsTask()
