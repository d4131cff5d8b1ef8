"""The training loop: cross-entropy over the intents, accuracy on validation. Seeded init,
the optimizer recipe and checkpoint-safe hyperparameters come from liveml's TaskModule."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from liveml.training.taskmodule import TaskModule
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from textintent.model import NgramBag


class TextIntentModule(TaskModule):
    """`forward(token_ids)` gives logits [N, C] over `cfg.task.classes`."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        cfg = self.cfg
        n_classes = len(cfg.task.classes)
        self.model = self.build_seeded(
            lambda: NgramBag(int(cfg.model.n_buckets), int(cfg.model.embed_dim), n_classes)
        )
        self.val_accuracy = MulticlassAccuracy(num_classes=n_classes, average="micro")

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.model(token_ids)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        ids, labels = batch
        loss = F.cross_entropy(self.model(ids), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        ids, labels = batch
        logits = self.model(ids)
        self.val_accuracy.update(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), batch_size=len(labels))

    def on_validation_epoch_end(self) -> None:
        self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True)
        self.val_accuracy.reset()
