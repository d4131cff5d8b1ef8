"""Data validation of the defects task: clean data passes, and each check catches its fault,
naming the file at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liveml.tasks.defects.checks import CHECKS, MIN_CLASS_FRACTION, validate


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def save(root: Path, split: str, coco: dict) -> None:
    (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))


def assert_failed(report: dict, check: str) -> None:
    assert not report["ok"] and not report["checks"][check]["passed"], report["problems"]


def named(report: dict, fragment: str) -> list[str]:
    """Messages of the problems whose file ends with `fragment`."""
    return [msg for file, msg in report["problems"] if file.endswith(fragment)]


def only_check_failing(report: dict, check: str) -> None:
    failing = [name for name, c in report["checks"].items() if not c["passed"]]
    assert failing == [check], report["problems"]


def image_with_labels(coco: dict, differ_from: set | None = None) -> dict:
    """An image entry with at least one box (and, if given, another class multiset)."""
    for im in coco["images"]:
        cats = sorted(a["category_id"] for a in coco["annotations"] if a["image_id"] == im["id"])
        if cats and (differ_from is None or tuple(cats) not in differ_from):
            return im
    raise AssertionError("tiny dataset has no such image")


def test_clean_data_passes(tiny_defects_data, tiny_data_cfg, defects_classes):
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert report["ok"] and report["problems"] == []
    assert set(report["checks"]) == set(CHECKS)
    assert all(c == {"passed": True, "failed_files": 0} for c in report["checks"].values())
    summary = report["summary"]
    assert (summary["images_train"], summary["images_val"], summary["images_test"]) == (24, 8, 8)
    for name in defects_classes:
        assert summary[f"boxes_{name}"] > 0
        assert summary[f"class_fraction_{name}"] >= MIN_CLASS_FRACTION
    assert summary["min_box_side"] >= 2 and summary["mean_box_side"] > summary["min_box_side"]
    assert summary["problems"] == 0
    assert all(isinstance(v, int | float) for v in summary.values())
    json.dumps(report)  # the stage writes it as DVC metrics


def test_missing_data_folder_is_a_clear_error(tmp_path, tiny_data_cfg, defects_classes):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        validate(tiny_data_cfg, defects_classes, tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["truncate", "garble", "not_png"])
def test_corrupt_image_is_named(damage, tiny_defects_data, tiny_data_cfg, defects_classes):
    path = tiny_defects_data / "images/val/val_00003.png"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garble":  # same length, flipped bytes in the middle of the pixel data
        mid = len(data) // 2
        path.write_bytes(
            data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
        )
    else:
        path.write_text("this is not an image")
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "decodable")
    assert named(report, "images/val/val_00003.png")
    only_check_failing(report, "decodable")


def test_wrong_size_and_mode_are_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    Image.new("RGB", (50, 64)).save(tiny_defects_data / "images/train/train_00001.png")
    Image.new("L", (64, 64)).save(tiny_defects_data / "images/train/train_00002.png")
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert any("50x64" in m for m in named(report, "train_00001.png"))
    assert any("RGB" in m for m in named(report, "train_00002.png"))


def test_missing_image_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    (tiny_defects_data / "images/test/test_00005.png").unlink()
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "schema")
    assert any("missing" in m for m in named(report, "images/test/test_00005.png"))


def test_missing_or_broken_annotation_file_is_named(
    tiny_defects_data, tiny_data_cfg, defects_classes
):
    (tiny_defects_data / "annotations/val.json").unlink()
    (tiny_defects_data / "annotations/test.json").write_text("{not json")
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert any("missing" in m for m in named(report, "annotations/val.json"))
    assert any("JSON" in m for m in named(report, "annotations/test.json"))


@pytest.mark.parametrize(
    "bbox, why",
    [
        ([10.0, 10.0, -4.0, 5.0], "negative"),
        ([-3.0, 10.0, 8.0, 5.0], "outside"),
        ([40.0, 40.0, 30.0, 10.0], "outside"),
        ([10.0, 10.0, float("nan"), 5.0], "finite"),
    ],
)
def test_bad_box_is_named(bbox, why, tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "train")
    im = image_with_labels(coco)
    ann = next(a for a in coco["annotations"] if a["image_id"] == im["id"])
    ann["bbox"], ann["area"] = bbox, bbox[2] * bbox[3]
    save(tiny_defects_data, "train", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "box_geometry")
    assert any(why in m for m in named(report, im["file_name"]))


def test_inconsistent_area_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "train")
    im = image_with_labels(coco)
    next(a for a in coco["annotations"] if a["image_id"] == im["id"])["area"] = 999.0
    save(tiny_defects_data, "train", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert any("area" in m for m in named(report, im["file_name"]))
    only_check_failing(report, "box_geometry")


def test_unknown_category_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "val")
    im = image_with_labels(coco)
    next(a for a in coco["annotations"] if a["image_id"] == im["id"])["category_id"] = 7
    save(tiny_defects_data, "val", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "schema")
    assert any("unknown category_id 7" in m for m in named(report, im["file_name"]))


def test_categories_not_matching_classes_are_named(tiny_defects_data, tiny_data_cfg):
    report = validate(tiny_data_cfg, ["scratch", "crack", "spot", "dent"], tiny_defects_data)
    for split in ("train", "val", "test"):
        assert any("dent" in m for m in named(report, f"annotations/{split}.json"))


def test_duplicate_ids_are_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "test")
    coco["annotations"][1]["id"] = coco["annotations"][0]["id"]
    coco["images"][3]["id"] = coco["images"][2]["id"]
    save(tiny_defects_data, "test", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "schema")
    assert any("used twice" in m for m in named(report, "annotations/test.json"))
    assert any("also used by" in m for m in named(report, coco["images"][3]["file_name"]))


def test_file_outside_its_split_folder_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "val")
    coco["images"][0]["file_name"] = "images/train/train_00000.png"
    save(tiny_defects_data, "val", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert any("images/val/" in m for m in named(report, "annotations/val.json"))


def test_garbage_entries_never_raise(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "train")
    coco["images"].append("not an image")
    coco["images"].append({"id": True, "file_name": 3})
    coco["annotations"].append({"id": 10_000, "image_id": 1, "category_id": 1, "bbox": "x"})
    coco["annotations"].append({"id": 10_001, "image_id": 424242, "category_id": 1})
    coco["categories"].append(None)
    save(tiny_defects_data, "train", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    messages = named(report, "annotations/train.json") + named(report, "train_00000.png")
    assert len(messages) >= 5, report["problems"]


def test_class_missing_from_a_split_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "val")
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 3]
    save(tiny_defects_data, "val", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    only_check_failing(report, "class_balance")
    assert any("'spot' has no boxes in split 'val'" in m for m in named(report, "val.json"))


def test_rare_class_in_train_is_named(tiny_defects_data, tiny_data_cfg, defects_classes):
    coco = load(tiny_defects_data, "train")
    spots = [a for a in coco["annotations"] if a["category_id"] == 3]
    drop = {a["id"] for a in spots[1:]}  # keep one spot box: present, but far below 10%
    coco["annotations"] = [a for a in coco["annotations"] if a["id"] not in drop]
    save(tiny_defects_data, "train", coco)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    only_check_failing(report, "class_balance")
    assert any("'spot'" in m and "below" in m for m in named(report, "annotations/train.json"))
    assert report["summary"]["class_fraction_spot"] < MIN_CLASS_FRACTION


def noisy_copy(src: Path, dst: Path) -> None:
    """`src` re-saved with a little sensor noise: the same photo, not the same bytes."""
    pixels = np.asarray(Image.open(src), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-4, 5, size=pixels.shape)
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(dst)


@pytest.mark.parametrize("copy", [shutil.copyfile, noisy_copy])
def test_near_duplicate_with_other_labels_is_named(
    copy, tiny_defects_data, tiny_data_cfg, defects_classes
):
    coco = load(tiny_defects_data, "train")
    first = image_with_labels(coco)
    labels = {
        tuple(sorted(a["category_id"] for a in coco["annotations"] if a["image_id"] == first["id"]))
    }
    second = image_with_labels(
        {**coco, "images": [im for im in coco["images"] if im["id"] > first["id"]]}, labels
    )
    copy(tiny_defects_data / first["file_name"], tiny_defects_data / second["file_name"])
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    only_check_failing(report, "label_consistency")
    assert any(first["file_name"] in m for m in named(report, second["file_name"]))
    assert report["summary"]["near_duplicates"] == 1


@pytest.mark.parametrize("copy", [shutil.copyfile, noisy_copy])
def test_train_photo_in_test_is_named(copy, tiny_defects_data, tiny_data_cfg, defects_classes):
    src, dst = "images/train/train_00003.png", "images/test/test_00004.png"
    copy(tiny_defects_data / src, tiny_defects_data / dst)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    assert_failed(report, "leakage")
    assert any(src in m and "leakage" in m for m in named(report, dst))


def test_same_photo_with_same_labels_is_only_leakage(
    tiny_defects_data, tiny_data_cfg, defects_classes
):
    # Copy a train photo *and its labels* over a test image: labels agree, the split leaks.
    train, test = load(tiny_defects_data, "train"), load(tiny_defects_data, "test")
    src, dst = train["images"][5], test["images"][2]
    shutil.copyfile(tiny_defects_data / src["file_name"], tiny_defects_data / dst["file_name"])
    next_id = max(a["id"] for a in test["annotations"]) + 1
    test["annotations"] = [a for a in test["annotations"] if a["image_id"] != dst["id"]]
    for k, a in enumerate(a for a in train["annotations"] if a["image_id"] == src["id"]):
        test["annotations"].append({**a, "id": next_id + k, "image_id": dst["id"]})
    save(tiny_defects_data, "test", test)
    report = validate(tiny_data_cfg, defects_classes, tiny_defects_data)
    only_check_failing(report, "leakage")
    assert report["checks"]["leakage"]["failed_files"] == 1
