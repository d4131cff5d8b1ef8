"""The defects training loop: FCOS losses, COCO mAP on validation, AdamW with one-cycle LR."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from liveml.optim import adamw_one_cycle
from liveml.tasks.defects.datamodule import Batch, Target
from liveml.tasks.defects.model import build_detector


def _plain_config(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


class DefectsModule(L.LightningModule):
    """Wraps `build_detector`; `forward(images)` returns detections (call `.eval()` first).

    `cfg` is the checked config (or its plain dict, as stored in checkpoints' hparams).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        if isinstance(cfg, dict):
            from liveml.config import check

            cfg = check(cfg, source="the checkpoint's hparams")
        self.cfg = cfg
        # A plain dict under one key: `load_from_checkpoint` then calls DefectsModule(cfg=...).
        self.save_hyperparameters({"cfg": _plain_config(cfg)})
        # Initial weights are a function of the config's seed alone, not of global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.seed))
            self.model = build_detector(cfg.model, len(cfg.task.classes), cfg.data.image_size)
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

    def configure_optimizers(self) -> dict:
        m = self.cfg.model
        return adamw_one_cycle(
            self.model.parameters(),
            lr=m.lr,
            weight_decay=m.weight_decay,
            warmup_frac=m.warmup_frac,
            total_steps=self.trainer.estimated_stepping_batches,
        )
