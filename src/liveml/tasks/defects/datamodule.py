"""COCO-format defect photos as a LightningDataModule with seeded, box-aware augmentation.

Exact resume: shuffling and augmentation are pure functions of (seed, epoch, index), never of
RNG state carried across epochs, so a run resumed from an epoch-boundary checkpoint sees the
same batches, and ends with the same weights, as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from liveml.data.sampling import EpochSampler, mix_seed

SPLITS = ("train", "val", "test")

Target = dict[str, Tensor]
Batch = tuple[list[Tensor], list[Target]]


def train_transform() -> v2.Transform:
    """Box-aware augmentation for training: geometry the defects are invariant to, plus the
    photometric drift of phone photos (darker, lower contrast) so the model does not overfit
    the recipe's capture conditions."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=(0.55, 1.25), contrast=(0.7, 1.3), saturation=(0.7, 1.3)),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )


class CocoDefects(Dataset):
    """One split of the dataset: (image float [3, H, W] in 0..1, {boxes XYXY, labels int64}).

    Indexed by `index` (no augmentation) or by an `(epoch, index)` key from `EpochSampler`,
    which seeds `transform` with (seed, epoch, index).
    """

    def __init__(
        self,
        data_dir: Path | str,
        split: str,
        classes: list[str] | None = None,
        transform: v2.Transform | None = None,
        seed: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.transform = transform
        self.seed = seed
        ann_file = self.data_dir / "annotations" / f"{split}.json"
        coco = json.loads(ann_file.read_text())
        if classes is not None:
            names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
            if names != list(classes):
                raise ValueError(
                    f"{ann_file}: categories {names} differ from task.classes {list(classes)}; "
                    "regenerate the data for this task (`dvc repro -f generate`)."
                )
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        boxes: dict[int, list[list[float]]] = {im["id"]: [] for im in self.images}
        labels: dict[int, list[int]] = {im["id"]: [] for im in self.images}
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            boxes[a["image_id"]].append([x, y, x + w, y + h])
            labels[a["image_id"]].append(a["category_id"])
        self._boxes = [torch.tensor(boxes[im["id"]], dtype=torch.float32) for im in self.images]
        self._labels = [torch.tensor(labels[im["id"]], dtype=torch.int64) for im in self.images]
        # Decoded images, filled on first use: PNG decoding is a tenth of an epoch's data time
        # and a 1,200-image split of 160 px photos is under 100 MB as uint8.
        self._pixels: list[Tensor | None] = [None] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[tv_tensors.Image, Target]:
        """The stored image (uint8) and its target, without augmentation."""
        image = self._pixels[index]
        if image is None:
            path = self.data_dir / self.images[index]["file_name"]
            image = self._pixels[index] = decode_image(str(path), mode=ImageReadMode.RGB)
        h, w = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(
            self._boxes[index].reshape(-1, 4), format="XYXY", canvas_size=(h, w)
        )
        return tv_tensors.Image(image), {"boxes": boxes, "labels": self._labels[index].clone()}

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Target]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, target = self.load(index)
        if self.transform is not None:
            # A private RNG stream per (seed, epoch, index): the global RNG is left untouched
            # and the result does not depend on which items (or workers) came before.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seed(self.seed, epoch, index))
                image, target = self.transform(image, target)
        return image.float().div_(255.0).as_subclass(Tensor), target


def collate(samples: list[tuple[Tensor, Target]]) -> Batch:
    """A list of images and a list of plain-tensor targets: the torchvision detection input."""
    images = [s[0] for s in samples]
    targets = [{k: v.as_subclass(Tensor) for k, v in s[1].items()} for s in samples]
    return images, targets


class DefectsDataModule(L.LightningDataModule):
    """train/val/test loaders over `data_dir` (the layout written by `synth.generate`)."""

    def __init__(self, cfg: Any, data_dir: Path | str) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.classes = list(cfg.task.classes)
        self.batch_size = int(cfg.model.batch_size)
        self.num_workers = int(cfg.trainer.num_workers)
        self.seed = int(cfg.seed)
        self.image_size = int(cfg.data.image_size)
        self._datasets: dict[str, CocoDefects] = {}

    def dataset(self, split: str) -> CocoDefects:
        """The split's dataset (augmented for train), built once."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        if split not in self._datasets:
            transform = train_transform() if split == "train" else None
            self._datasets[split] = CocoDefects(
                self.data_dir, split, self.classes, transform=transform, seed=self.seed
            )
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        train = split == "train"
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), self.seed, shuffle=train),
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # A full last batch keeps BatchNorm statistics sane; tiny test sets keep theirs.
            drop_last=train and len(ds) >= self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
