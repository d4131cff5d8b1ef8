"""The defects training loop: FCOS losses, COCO mAP on validation, AdamW with one-cycle LR."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

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
        # No weight decay on norms and biases: decaying them only slows from-scratch training.
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(m.weight_decay)},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(m.lr),
        )
        # Per-step one-cycle: linear warm-up then cosine decay; its state is in the checkpoint.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=float(m.lr),
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            pct_start=float(m.warmup_frac),
            anneal_strategy="cos",
            div_factor=25.0,
            final_div_factor=1e3,
        )
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
