"""Validation of a defects dataset: every problem names the file and says what is wrong.

Checks: COCO schema, box geometry, image decodability, class balance, and label consistency
(near-duplicate photos with conflicting labels, the same photo in two splits). Never raises on
bad data: the validate stage turns `report["problems"]` into a DataValidationError.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from liveml.data.findings import Findings

SPLITS = ("train", "val", "test")
CHECKS = ("schema", "box_geometry", "decodable", "class_balance", "label_consistency", "leakage")
MIN_CLASS_FRACTION = 0.1  # in train, every class holds at least this share of the boxes
BOUNDS_TOLERANCE = 0.5  # px a box may stick out of its image (rounding of float coordinates)
AREA_TOLERANCE = 0.01  # relative difference allowed between `area` and w * h
HASH_SIDE = 8  # difference hash of an 8x8 grid: 64 bits per image
# Near-duplicates: hashes this close (Hamming) are candidates. A noisy, re-encoded copy of a
# photo lands within 10 bits: flat screens make gradient signs fragile, so the hash only
# shortlists and the thumbnails decide.
NEAR_DUPLICATE_BITS = 12
THUMB_SIDE = 32
# Same photo: 98% of the 32x32 grey thumbnail pixels differ by at most this (copies: <= 0.02;
# different synthetic photos: >= 0.14).
DUPLICATE_QUANTILE, DUPLICATE_DIFF = 0.98, 0.06
PAIR_BLOCK = 512  # rows of the all-pairs Hamming matrix computed at once
MATCH_IOU = 0.5  # boxes of two copies of a photo agree when they pair up at this IoU


@dataclass
class Labelled:
    """One image entry that passed the schema check, with its well-formed annotations."""

    split: str
    image_id: int
    file_name: str  # relative to the data folder, as in the COCO file
    width: int
    height: int
    on_disk: bool
    boxes: list[tuple[int, list[float], float]] = field(default_factory=list)  # (cat, bbox, area)


def validate(data_cfg: Any, classes: list[str], data_dir: Path) -> dict:
    """Check the dataset in `data_dir`; return {ok, problems, summary, checks} (JSON-ready)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data folder {data_dir} does not exist; fix: generate it (`dvc repro generate`)."
        )
    findings = Findings(data_dir, CHECKS)
    splits = {
        split: load_split(data_dir, split, classes, _image_size(data_cfg), findings)
        for split in SPLITS
    }
    records = [r for split in SPLITS for r in splits[split]]
    check_box_geometry(records, findings)
    thumbs = check_decodable(data_dir, records, findings)
    check_class_balance(splits, classes, findings)
    duplicates = check_label_consistency(records, thumbs, findings)
    problems = findings.problems()
    return {
        "ok": not problems,
        "problems": problems,
        "summary": _summary(splits, classes, duplicates, len(problems)),
        "checks": findings.checks(),
    }


def _image_size(data_cfg: Any) -> int | None:
    size = data_cfg.get("image_size") if isinstance(data_cfg, dict) else None
    return size if size is not None else getattr(data_cfg, "image_size", None)


# ---------------------------------------------------------------------------------------------
# 1. Schema


def load_split(
    data_dir: Path, split: str, classes: list[str], image_size: int | None, findings: Findings
) -> list[Labelled]:
    """Parse annotations/<split>.json; return its well-formed images with their annotations."""
    ann_file = f"annotations/{split}.json"
    coco = _read_json(data_dir / ann_file, ann_file, findings)
    if coco is None:
        return []
    _check_categories(coco["categories"], classes, ann_file, findings)
    images = _check_images(coco["images"], split, image_size, data_dir, ann_file, findings)
    _attach_annotations(coco["annotations"], images, len(classes), ann_file, findings)
    return list(images.values())


def _read_json(path: Path, ann_file: str, findings: Findings) -> dict | None:
    if not path.is_file():
        findings.add("schema", ann_file, "missing: the split's COCO annotation file is not there")
        return None
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        findings.add("schema", ann_file, f"not readable JSON: {e}")
        return None
    if not isinstance(coco, dict):
        findings.add("schema", ann_file, "top level is not a JSON object")
        return None
    bad = [k for k in ("images", "annotations", "categories") if not isinstance(coco.get(k), list)]
    if bad:
        findings.add("schema", ann_file, f"keys {bad} missing or not lists")
        return None
    return coco


def _check_categories(categories: list, classes: list[str], ann_file: str, findings) -> None:
    want = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    got = [
        {"id": c.get("id"), "name": c.get("name")} if isinstance(c, dict) else c for c in categories
    ]
    if sorted(got, key=str) != sorted(want, key=str):
        findings.add(
            "schema",
            ann_file,
            f"categories {got} do not match task.classes {classes} "
            f"(expected ids 1..{len(classes)} in that order)",
        )


def _check_images(
    entries: list, split: str, image_size: int | None, data_dir: Path, ann_file: str, findings
) -> dict[int, Labelled]:
    images: dict[int, Labelled] = {}
    seen_names: set[str] = set()
    for k, entry in enumerate(entries):
        why = _image_entry_problem(entry, split)
        name = entry.get("file_name") if isinstance(entry, dict) else None
        where = name if isinstance(name, str) and why is None else ann_file
        if why is not None:
            findings.add("schema", ann_file, f"images[{k}]: {why}")
            continue
        if entry["id"] in images:
            other = images[entry["id"]].file_name
            findings.add("schema", where, f"image id {entry['id']} is also used by {other}")
            continue
        if name in seen_names:
            findings.add("schema", where, f"listed twice in {ann_file}")
            continue
        seen_names.add(name)
        if image_size is not None and (entry["width"], entry["height"]) != (image_size,) * 2:
            findings.add(
                "schema",
                where,
                f"declared {entry['width']}x{entry['height']}, the recipe says "
                f"{image_size}x{image_size}",
            )
        on_disk = (data_dir / name).is_file()
        if not on_disk:
            findings.add("schema", where, f"missing: listed in {ann_file} but not on disk")
        images[entry["id"]] = Labelled(
            split, entry["id"], name, entry["width"], entry["height"], on_disk
        )
    return images


def _image_entry_problem(entry: Any, split: str) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    for key, kind in (("id", int), ("file_name", str), ("width", int), ("height", int)):
        if not _is(entry.get(key), kind):
            return f"`{key}` missing or not {kind.__name__}: {entry.get(key)!r}"
    if entry["width"] <= 0 or entry["height"] <= 0:
        return f"non-positive size {entry['width']}x{entry['height']}"
    path = PurePosixPath(entry["file_name"])
    if path.is_absolute() or ".." in path.parts or path.parent != PurePosixPath("images", split):
        return f"file_name {entry['file_name']!r} does not lie in images/{split}/"
    return None


def _is(value: Any, kind: type) -> bool:
    """isinstance, except that a bool is not an int (JSON true must not pass as id 1)."""
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _is_number(value: Any) -> bool:
    """An int or float that converts to a float (JSON allows ints too big for one)."""
    if not (_is(value, int) or _is(value, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _attach_annotations(entries: list, images: dict, n_classes: int, ann_file: str, findings):
    first_use: dict[int, str] = {}
    for k, ann in enumerate(entries):
        if not isinstance(ann, dict) or not all(
            _is(ann.get(key), int) for key in ("id", "image_id", "category_id")
        ):
            findings.add("schema", ann_file, f"annotations[{k}]: id/image_id/category_id not ints")
            continue
        image = images.get(ann["image_id"])
        if image is None:
            findings.add(
                "schema",
                ann_file,
                f"annotation {ann['id']} points to image_id {ann['image_id']}, "
                "which is not a valid image of this split",
            )
            continue
        if ann["id"] in first_use:
            findings.add(
                "schema",
                ann_file,
                f"annotation id {ann['id']} is used twice ({first_use[ann['id']]} and "
                f"{image.file_name})",
            )
            continue
        first_use[ann["id"]] = image.file_name
        why = _annotation_problem(ann, n_classes)
        if why is not None:
            findings.add("schema", image.file_name, f"annotation {ann['id']}: {why}")
            continue
        image.boxes.append((ann["category_id"], [float(v) for v in ann["bbox"]], ann["area"]))


def _annotation_problem(ann: dict, n_classes: int) -> str | None:
    if not 1 <= ann["category_id"] <= n_classes:
        return f"unknown category_id {ann['category_id']} (known: 1..{n_classes})"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not 4 numbers [x, y, w, h]"
    if not _is_number(ann.get("area")):
        return f"area {ann.get('area')!r} is not a number"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd {ann.get('iscrowd')!r} is not 0 or 1"
    return None


# ---------------------------------------------------------------------------------------------
# 2. Box geometry


def check_box_geometry(records: list[Labelled], findings: Findings) -> None:
    for record in records:
        for i, (_, bbox, area) in enumerate(record.boxes):
            why = box_problem(bbox, area, record.width, record.height)
            if why is not None:
                findings.add("box_geometry", record.file_name, f"box #{i} {bbox}: {why}")


def box_problem(bbox: list[float], area: float, width: int, height: int) -> str | None:
    """What is wrong with one [x, y, w, h] box in a width x height image (None when fine)."""
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in (x, y, w, h, area)):
        return "not finite"
    if w <= 0 or h <= 0:
        return "zero or negative width/height"
    t = BOUNDS_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"outside the {width}x{height} image"
    if abs(area - w * h) > max(AREA_TOLERANCE * w * h, 0.5):
        return f"area {area} does not match w*h = {w * h:.3f}"
    return None


def _good_boxes(record: Labelled) -> list[tuple[int, list[float]]]:
    return [
        (cat, bbox)
        for cat, bbox, area in record.boxes
        if box_problem(bbox, area, record.width, record.height) is None
    ]


# ---------------------------------------------------------------------------------------------
# 3. Decodability (also yields each photo's hash and thumbnail for the duplicate check)


@dataclass
class Thumb:
    dhash: int
    grey: np.ndarray  # THUMB_SIDE x THUMB_SIDE float32 in [0, 1]


def check_decodable(data_dir: Path, records: list[Labelled], findings: Findings) -> dict:
    """Fully decode every image on disk; returns {(split, image_id): Thumb} of the good ones."""
    thumbs = {}
    for record in records:
        if not record.on_disk:
            continue
        try:
            thumb, why = _decode(data_dir / record.file_name, record)
        except Exception as e:  # PIL raises many kinds on corrupt data; all mean "unreadable"
            thumb, why = None, f"cannot be decoded ({type(e).__name__}: {e})"
        if why is not None:
            findings.add("decodable", record.file_name, why)
        if thumb is not None:
            thumbs[(record.split, record.image_id)] = thumb
    return thumbs


def _decode(path: Path, record: Labelled) -> tuple[Thumb | None, str | None]:
    with Image.open(path) as img:
        img.verify()  # checksums of every chunk: catches flipped bytes that still decode
    with Image.open(path) as img:
        img.load()  # full decode: catches truncation
        if img.size != (record.width, record.height):
            return (
                None,
                f"is {img.size[0]}x{img.size[1]}, annotations say {record.width}x{record.height}",
            )
        if img.mode != "RGB":
            return None, f"mode {img.mode}, expected RGB"
        return thumbnail(img), None


def thumbnail(img: Image.Image) -> Thumb:
    """Difference hash (sign of horizontal gradients on a 9x8 grey grid) and a grey thumbnail."""
    grey = img.convert("L")
    small = np.asarray(grey.resize((HASH_SIDE + 1, HASH_SIDE), Image.BOX), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    dhash = int(np.packbits(bits).view(">u8")[0])
    thumb = np.asarray(grey.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX), dtype=np.float32) / 255
    return Thumb(dhash, thumb)


# ---------------------------------------------------------------------------------------------
# 4. Class balance


def class_counts(records: list[Labelled], classes: list[str]) -> dict[str, int]:
    counts = Counter(classes[cat - 1] for r in records for cat, _, _ in r.boxes)
    return {name: counts.get(name, 0) for name in classes}


def check_class_balance(splits: dict[str, list[Labelled]], classes: list[str], findings) -> None:
    for split, records in splits.items():
        if not records:
            continue  # a missing or empty split is a schema problem already
        ann_file = f"annotations/{split}.json"
        counts = class_counts(records, classes)
        for name, n in counts.items():
            if n == 0:
                findings.add(
                    "class_balance",
                    ann_file,
                    f"class {name!r} has no boxes in split {split!r} ({len(records)} images)",
                )
        total = sum(counts.values())
        if split != "train" or total == 0:
            continue
        for name, n in counts.items():
            if 0 < n < MIN_CLASS_FRACTION * total:
                findings.add(
                    "class_balance",
                    ann_file,
                    f"class {name!r} has {n} of {total} train boxes ({n / total:.1%}), "
                    f"below the minimum {MIN_CLASS_FRACTION:.0%}",
                )


# ---------------------------------------------------------------------------------------------
# 5. Label consistency and split leakage


def check_label_consistency(records: list[Labelled], thumbs: dict, findings: Findings) -> int:
    """Flag near-duplicate photos whose labels conflict, and photos present in two splits.
    Returns the number of near-duplicate pairs found."""
    keyed = [r for r in records if (r.split, r.image_id) in thumbs]
    pairs = near_duplicate_pairs(keyed, thumbs)
    for a, b in pairs:  # a comes first in (train, val, test) order: b is the copy to report
        if a.split != b.split:
            findings.add(
                "leakage",
                b.file_name,
                f"the same photo as {a.file_name} ({a.split}) is in split {b.split!r}: "
                "split leakage, remove one of them",
            )
        conflict = label_conflict(_good_boxes(a), _good_boxes(b))
        if conflict is not None:
            findings.add(
                "label_consistency",
                b.file_name,
                f"near-duplicate of {a.file_name} but the labels differ: {conflict}",
            )
    return len(pairs)


def near_duplicate_pairs(records: list[Labelled], thumbs: dict) -> list[tuple]:
    """Pairs (a before b) of the same photo: hashes within NEAR_DUPLICATE_BITS (all pairs, in
    numpy, a block of rows at a time), then confirmed on their thumbnails."""
    if len(records) < 2:
        return []
    keys = [(r.split, r.image_id) for r in records]
    hashes = np.array([thumbs[k].dhash for k in keys], dtype=np.uint64)
    greys = np.stack([thumbs[k].grey.ravel() for k in keys])
    pairs = []
    for start in range(0, len(hashes), PAIR_BLOCK):
        distance = np.bitwise_count(hashes[start : start + PAIR_BLOCK, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= NEAR_DUPLICATE_BITS)
        rows += start
        keep = rows < cols
        rows, cols = rows[keep], cols[keep]
        if len(rows):
            same = same_photo(greys[rows], greys[cols])
            pairs += [(records[a], records[b]) for a, b in zip(rows[same], cols[same], strict=True)]
    return pairs


def same_photo(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: do these flattened thumbnails show the same photo? Nearly all of their pixels
    must agree (a re-encoded or noisy copy does; two different photos never do)."""
    return np.quantile(np.abs(a - b), DUPLICATE_QUANTILE, axis=1) <= DUPLICATE_DIFF


def label_conflict(a: list[tuple[int, list[float]]], b: list[tuple[int, list[float]]]):
    """Why two label sets of the same photo disagree (None when they agree)."""
    count_a, count_b = Counter(cat for cat, _ in a), Counter(cat for cat, _ in b)
    if count_a != count_b:
        return f"category counts {dict(sorted(count_a.items()))} vs {dict(sorted(count_b.items()))}"
    for cat in count_a:
        boxes_a = [box for c, box in a if c == cat]
        boxes_b = [box for c, box in b if c == cat]
        if not _boxes_match(boxes_a, boxes_b):
            return f"boxes of category {cat} do not match at IoU >= {MATCH_IOU}"
    return None


def _boxes_match(a: list[list[float]], b: list[list[float]]) -> bool:
    """Greedy one-to-one matching by IoU: every box finds a partner at IoU >= MATCH_IOU."""
    candidates = sorted(
        ((iou(p, q), i, j) for i, p in enumerate(a) for j, q in enumerate(b)), reverse=True
    )
    used_a, used_b = set(), set()
    for value, i, j in candidates:
        if value >= MATCH_IOU and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a) == len(a)


def iou(p: list[float], q: list[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ix = max(0.0, min(p[0] + p[2], q[0] + q[2]) - max(p[0], q[0]))
    iy = max(0.0, min(p[1] + p[3], q[1] + q[3]) - max(p[1], q[1]))
    inter = ix * iy
    union = p[2] * p[3] + q[2] * q[3] - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Summary: numbers for DVC metrics


def _summary(splits: dict, classes: list[str], duplicates: int, n_problems: int) -> dict:
    summary: dict[str, float | int] = {f"images_{s}": len(splits[s]) for s in SPLITS}
    all_records = [r for s in SPLITS for r in splits[s]]
    for name, n in class_counts(all_records, classes).items():
        summary[f"boxes_{name}"] = n
    train = class_counts(splits["train"], classes)
    total = sum(train.values())
    for name, n in train.items():  # fractions of train boxes: what MIN_CLASS_FRACTION bounds
        summary[f"class_fraction_{name}"] = round(n / total, 4) if total else 0.0
    sides = [min(b[2], b[3]) for r in all_records for _, b in _good_boxes(r)]
    means = [(b[2] + b[3]) / 2 for r in all_records for _, b in _good_boxes(r)]
    summary["min_box_side"] = round(min(sides), 3) if sides else 0.0
    summary["mean_box_side"] = round(sum(means) / len(means), 3) if means else 0.0
    summary["near_duplicates"] = duplicates
    summary["problems"] = n_problems
    return summary
