"""The dataset for training: every message featurized once into token ids, batches in an
order that is a pure function of (seed, epoch) (liveml's EpochSampler), so a resumed run sees
the batches an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from liveml.data.sampling import EpochSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from textintent.layout import read_split
from textintent.synth import SPLITS
from textintent.text import featurize


def load_split(
    data_dir: Path, split: str, classes: list[str], n_buckets: int, max_tokens: int
) -> tuple[Tensor, Tensor]:
    """(token ids int64 [n, max_tokens], class indices int64 [n]) of one split, in order."""
    index = {c: i for i, c in enumerate(classes)}
    ids, labels = [], []
    for example in read_split(Path(data_dir), split):
        intent = example.label.get("intent")
        if intent not in index:
            raise ValueError(
                f"{example.input}: intent {intent!r} is not one of task.classes {classes}; "
                "fix: regenerate the data for this task (`dvc repro -f generate`)."
            )
        text = example.input.read_bytes().decode("utf-8-sig")
        ids.append(featurize(text, n_buckets, max_tokens))
        labels.append(index[intent])
    if not ids:
        raise ValueError(f"split {split!r} of {data_dir} is empty; fix: regenerate the data.")
    return torch.from_numpy(np.stack(ids)), torch.tensor(labels, dtype=torch.int64)


class Messages(Dataset):
    """One split: (token ids [L], class index), indexed by i or an (epoch, i) sampler key."""

    def __init__(self, ids: Tensor, labels: Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        i = key[1] if isinstance(key, tuple) else key
        return self.ids[i], self.labels[i]


class TextIntentDataModule(L.LightningDataModule):
    """train/val/test loaders over a dataset folder in the textintent layout."""

    def __init__(self, cfg: Any, data_dir: Path | str):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.classes = list(cfg.task.classes)
        self.n_buckets = int(cfg.model.n_buckets)
        self.max_tokens = int(cfg.model.max_tokens)
        self.batch_size = int(cfg.model.batch_size)
        self.num_workers = int(cfg.trainer.num_workers)
        self.seed = int(cfg.seed)
        self._datasets: dict[str, Messages] = {}

    def dataset(self, split: str) -> Messages:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        if split not in self._datasets:
            ids, labels = load_split(
                self.data_dir, split, self.classes, self.n_buckets, self.max_tokens
            )
            self._datasets[split] = Messages(ids, labels)
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), self.seed, shuffle=split == "train"),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
