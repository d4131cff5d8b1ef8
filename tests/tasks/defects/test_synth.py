"""The synthetic phone-screen generator: deterministic, COCO-shaped, exact boxes, working knobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liveml.tasks.defects.synth import SPLITS, as_recipe, generate, image_rng, render_photo

SMALL = {"n_train": 6, "n_val": 3, "n_test": 3}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_same_seed_gives_identical_files(make_defects_data, tmp_path):
    a = file_digests(make_defects_data(tmp_path / "a", SMALL))
    b = file_digests(make_defects_data(tmp_path / "b", SMALL))
    assert len(a) == 12 + 3 and a == b


def test_other_seed_gives_other_images(make_defects_data, tmp_path):
    a = file_digests(make_defects_data(tmp_path / "a", SMALL))
    b = file_digests(make_defects_data(tmp_path / "b", {**SMALL, "seed": 1}))
    pngs = [name for name in a if name.endswith(".png")]
    assert all(a[name] != b[name] for name in pngs)


def test_images_do_not_depend_on_generation_order(make_defects_data, tmp_path):
    # Each image has its own RNG: a bigger split starts with the same photos.
    few = file_digests(make_defects_data(tmp_path / "few", SMALL))
    more = file_digests(make_defects_data(tmp_path / "more", {**SMALL, "n_train": 9}))
    assert all(more[name] == digest for name, digest in few.items() if name.endswith(".png"))


def test_coco_layout_and_split_sizes(tiny_defects_data, tiny_data_cfg, defects_classes):
    digests = set()
    for split in SPLITS:
        coco = load(tiny_defects_data, split)
        assert len(coco["images"]) == tiny_data_cfg[f"n_{split}"]
        assert coco["categories"] == [
            {"id": i + 1, "name": name} for i, name in enumerate(defects_classes)
        ]
        assert coco["info"]["recipe"] == dataclasses.asdict(as_recipe(tiny_data_cfg))
        assert coco["info"]["seed"] == tiny_data_cfg.seed
        image_ids = [im["id"] for im in coco["images"]]
        assert len(set(image_ids)) == len(image_ids)
        for im in coco["images"]:
            assert im["file_name"].startswith(f"images/{split}/{split}_")
            assert set(im["capture"]) == {"brightness", "blur", "noise", "glare", "angle"}
            with Image.open(tiny_defects_data / im["file_name"]) as img:
                assert img.mode == "RGB" and img.size == (im["width"], im["height"]) == (64, 64)
            digests.add(hashlib.sha256((tiny_defects_data / im["file_name"]).read_bytes()).digest())
        ann_ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids) > 0
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["image_id"] in image_ids and 1 <= ann["category_id"] <= 3
            assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h, rel=1e-3)
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert w >= 2 and h >= 2
    assert len(digests) == 40  # no photo appears twice, within or across splits


def test_accepts_dataclass_and_rejects_unknown_class(tiny_recipe, tmp_path):
    recipe = as_recipe(tiny_recipe(SMALL))
    summary = generate(recipe, ["scratch", "crack", "spot"], tmp_path / "d")
    assert summary["images"] == {"train": 6, "val": 3, "test": 3}
    with pytest.raises(ValueError, match="dent"):
        generate(recipe, ["scratch", "dent"], tmp_path / "e")


# Capture effects off, so that a photo differs from its defect-free twin only by its defects.
CLEAN = {
    "image_size": 96,
    "noise": 0.0,
    "blur": 0.0,
    "glare": 0.0,
    "brightness_jitter": 0.0,
}


@pytest.mark.parametrize("seed", range(24))
def test_boxes_cover_exactly_the_defect_pixels(seed, tiny_recipe, defects_classes):
    with_defects = as_recipe(tiny_recipe(CLEAN))
    without = as_recipe(tiny_recipe({**CLEAN, "max_defects": 0}))
    photo, _, boxes = render_photo(with_defects, defects_classes, image_rng(seed, 0, 0))
    clean, _, none = render_photo(without, defects_classes, image_rng(seed, 0, 0))
    assert none == []
    diff = np.abs(photo.astype(int) - clean.astype(int)).max(axis=2)
    touched, strong = diff > 8, diff > 48  # any trace of a defect / its clearly visible body
    covered = np.zeros(diff.shape, dtype=bool)
    for _, box in boxes:
        x0, y0, x1, y1 = int(box.x0), int(box.y0), int(np.ceil(box.x1)), int(np.ceil(box.y1))
        # 1 px margin: the photo's bilinear roll spreads a defect's fringe by up to a pixel.
        covered[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        in_box = touched[y0:y1, x0:x1]
        rows, cols = np.flatnonzero(in_box.any(axis=1)), np.flatnonzero(in_box.any(axis=0))
        assert len(rows), f"box {box} holds no defect pixel"
        h, w = in_box.shape  # tight: the defect reaches within 1 px of every side
        assert rows[0] <= 1 and cols[0] <= 1 and rows[-1] >= h - 2 and cols[-1] >= w - 2, box
    assert not (strong & ~covered).any(), "visible defect pixels outside every box"


def mean_luminance(recipe, classes, n=10) -> float:
    photos = [render_photo(recipe, classes, image_rng(0, 0, i), i)[0] for i in range(n)]
    return float(np.mean([p @ [0.299, 0.587, 0.114] for p in photos]))


def test_brightness_knob_darkens_photos(tiny_recipe, defects_classes):
    normal = mean_luminance(as_recipe(tiny_recipe()), defects_classes)
    dark = mean_luminance(as_recipe(tiny_recipe({"brightness": 0.7})), defects_classes)
    assert dark < 0.8 * normal


def scratch_lengths(recipe, classes, n=30) -> list[float]:
    lengths = []
    for i in range(n):
        _, _, boxes = render_photo(recipe, classes, image_rng(0, 0, i), i)
        lengths += [np.hypot(b.x1 - b.x0, b.y1 - b.y0) for c, b in boxes if c == 1]
    return lengths


def test_scratch_length_knob_lengthens_scratches(tiny_recipe, defects_classes):
    base = scratch_lengths(as_recipe(tiny_recipe({"image_size": 96})), defects_classes)
    longer = as_recipe(tiny_recipe({"image_size": 96, "scratch_length": 0.6}))
    assert np.mean(scratch_lengths(longer, defects_classes)) > 1.4 * np.mean(base)
    assert np.mean(base) == pytest.approx(0.35 * 96, rel=0.25)  # box diagonal ~ scratch length
