"""The defects training loop: FCOS losses, COCO mAP on validation, AdamW with one-cycle LR."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from liveml.tasks.defects.datamodule import Batch, Target
from liveml.tasks.defects.model import build_detector
from liveml.training.taskmodule import TaskModule


class DefectsModule(TaskModule):
    """Wraps `build_detector`; `forward(images)` returns detections (call `.eval()` first).

    `cfg` is the checked config (or its plain dict, as stored in checkpoints' hparams).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        cfg = self.cfg  # checked, also when reloaded from a checkpoint's plain dict
        self.model = self.build_seeded(
            lambda: build_detector(cfg.model, len(cfg.task.classes), cfg.data.image_size)
        )
        self.val_map = MeanAveragePrecision(iou_type="bbox")

    def forward(self, images: list[Tensor]) -> list[Target]:
        return self.model(list(images))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/loss_{k}": v for k, v in losses.items()}, batch_size=n)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets = batch
        self.val_map.update(self.model(images), targets)

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.val_map.reset()
        self.log("val/map_50", result["map_50"], prog_bar=True)
        self.log("val/map", result["map"])
