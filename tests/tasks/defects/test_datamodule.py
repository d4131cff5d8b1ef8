"""The defects data: COCO loading, box-aware augmentation, and (seed, epoch, index) determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from liveml.data.sampling import EpochSampler
from liveml.tasks.defects.datamodule import (
    CocoDefects,
    DefectsDataModule,
    train_transform,
)

from taskconfig import check

CLASSES = ["scratch", "crack", "spot"]


def tiny_cfg(batch_size: int = 4):
    return check(
        {
            "seed": 0,
            "task": {"name": "defects", "classes": CLASSES},
            "data": {"image_size": 64},
            "model": {"batch_size": batch_size},
        }
    )


def one_spot_dataset(root: Path) -> Path:
    """A one-image COCO dataset: a white 3x3 'spot' near the left edge of a grey photo."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    img = torch.full((64, 64, 3), 90, dtype=torch.uint8)
    img[10:13, 5:8] = 255
    Image.fromarray(img.numpy()).save(root / "images/train/train_00000.png")
    image = {"id": 1, "file_name": "images/train/train_00000.png", "width": 64, "height": 64}
    spot = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 10, 3, 3], "area": 9}
    coco = {
        "images": [image],
        "annotations": [{**spot, "iscrowd": 0}],
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)],
    }
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    return root


def test_dataset_matches_the_coco_file(tiny_defects_data):
    ds = CocoDefects(tiny_defects_data, "val", CLASSES)
    coco = json.loads((tiny_defects_data / "annotations" / "val.json").read_text())
    assert len(ds) == len(coco["images"])
    image, target = ds[0]
    assert type(image) is torch.Tensor and image.dtype == torch.float32
    assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    first = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    want = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in first)])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), want.reshape(-1, 4))
    assert target["labels"].tolist() == [a["category_id"] for a in first]


def test_class_order_mismatch_is_an_error(tiny_defects_data):
    with pytest.raises(ValueError, match=r"task\.classes"):
        CocoDefects(tiny_defects_data, "val", ["crack", "scratch", "spot"])


def test_augmented_box_still_holds_the_defect(tmp_path):
    ds = CocoDefects(one_spot_dataset(tmp_path), "train", CLASSES, transform=train_transform())
    flipped = 0
    for epoch in range(12):
        image, target = ds[(epoch, 0)]
        (box,) = target["boxes"].tolist()
        # The spot is the brightest pixel (photometric jitter keeps the order of intensities).
        y, x = divmod(int(image.sum(0).argmax()), 64)
        assert box[0] <= x < box[2] and box[1] <= y < box[3]
        assert box[2] - box[0] == pytest.approx(3) and box[3] - box[1] == pytest.approx(3)
        flipped += box[0] > 32
    assert 0 < flipped < 12  # both the flipped and the unflipped case were checked


def test_same_key_gives_the_same_sample_whatever_the_global_rng(tiny_defects_data):
    ds = CocoDefects(tiny_defects_data, "train", CLASSES, transform=train_transform(), seed=3)
    a_img, a_tgt = ds[(2, 5)]
    torch.rand(100)  # global RNG moves on...
    state = torch.get_rng_state()
    b_img, b_tgt = ds[(2, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # ...and the dataset leaves it alone
    assert torch.equal(a_img, b_img)
    assert torch.equal(a_tgt["boxes"], b_tgt["boxes"])
    assert torch.equal(a_tgt["labels"], b_tgt["labels"])


def test_another_epoch_or_seed_augments_differently(tiny_defects_data):
    ds = CocoDefects(tiny_defects_data, "train", CLASSES, transform=train_transform(), seed=0)
    other_seed = CocoDefects(tiny_defects_data, "train", CLASSES, train_transform(), seed=1)
    for index in range(4):
        assert not torch.equal(ds[(0, index)][0], ds[(1, index)][0])
        assert not torch.equal(ds[(0, index)][0], other_seed[(0, index)][0])


def test_sampler_order_depends_on_epoch_and_is_reproducible():
    a, b = EpochSampler(50, seed=0), EpochSampler(50, seed=0)
    a.set_epoch(3)
    b.set_epoch(3)
    keys = list(a)
    assert keys == list(b) and {e for e, _ in keys} == {3}
    assert sorted(i for _, i in keys) == list(range(50))
    b.set_epoch(4)
    assert [i for _, i in b] != [i for _, i in keys]
    assert EpochSampler(50, seed=1).order(3) != a.order(3)
    assert EpochSampler(5, shuffle=False).order(7) == [0, 1, 2, 3, 4]


def test_loaders_batch_lists_of_images_and_plain_targets(tiny_defects_data):
    dm = DefectsDataModule(tiny_cfg(batch_size=4), tiny_defects_data)
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == len(targets) == 4
    assert all(img.shape == (3, 64, 64) for img in images)
    assert all(type(t["boxes"]) is torch.Tensor for t in targets)
    assert all(t["labels"].dtype == torch.int64 for t in targets)
    assert len(dm.train_dataloader()) == len(dm.dataset("train")) // 4
    # Evaluation splits: every image once, in file order, unaugmented.
    val = dm.val_dataloader()
    assert sum(len(b[0]) for b in val) == len(dm.dataset("val"))
    first_images, _ = next(iter(val))
    assert torch.equal(first_images[0], dm.dataset("val")[0][0])
