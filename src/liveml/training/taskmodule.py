"""`TaskModule`: what every task's LightningModule shares, so each task writes only its loop.

The checked config is `self.cfg` and is saved as plain hyperparameters (checkpoints reload
with `cls(cfg=...)`); initial weights depend on `cfg.seed` alone; the optimizer is the shared
AdamW one-cycle recipe over `cfg.model.{lr, weight_decay, warmup_frac}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from liveml.training.optim import adamw_one_cycle


class TaskModule(L.LightningModule):
    """Base of the tasks' modules; subclasses set `self.model` with `build_seeded`."""

    model: nn.Module

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        from liveml.core.config import check, to_dict

        if isinstance(cfg, dict):
            cfg = check(cfg, source="the checkpoint's hparams")
        self.cfg = cfg
        # A plain dict under one key: `load_from_checkpoint` then calls cls(cfg=...).
        self.save_hyperparameters({"cfg": to_dict(cfg)})

    def build_seeded(self, build: Callable[[], nn.Module]) -> nn.Module:
        """`build()` with the RNG seeded from the config alone, not from global RNG state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.cfg.seed))
            return build()

    def configure_optimizers(self) -> dict:
        m = self.cfg.model
        return adamw_one_cycle(
            self.model.parameters(),
            lr=m.lr,
            weight_decay=m.weight_decay,
            warmup_frac=m.warmup_frac,
            total_steps=self.trainer.estimated_stepping_batches,
        )
