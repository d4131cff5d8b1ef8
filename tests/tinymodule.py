"""A Lightning module that trains in milliseconds, for tests of the loggers around Lightning."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Tiny(L.LightningModule):
    """A linear regression: Lightning's loop and logging in milliseconds."""

    def __init__(self, fail_at_step: int | None = None):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.fail_at_step = fail_at_step

    def training_step(self, batch, i):
        if self.global_step == self.fail_at_step:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def _loader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1)), 4)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()


def fit(module, loggers) -> None:
    """Two quick epochs of `module` with `loggers` and nothing else Lightning adds."""
    L.Trainer(
        max_epochs=2,
        logger=loggers,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module)
