"""The defects task's dataset layout as examples, and what feedback needs from the task: the
generator's ground truth, the merge rules, the headline score.

Layout: `images/<split>/<stem>.png` and `annotations/<split>.json` (COCO). An example's label
is {"image": the COCO image record without id and file_name, "annotations": its boxes without
ids, "categories": the COCO categories}; other top-level label keys (the framework's sha256,
source, feedback) are stored in the image record. Ids are renumbered on write, in order, as the
generator numbers them, so rewriting a split as read leaves it byte-identical.

The traffic sent to the server comes from folders the defects generator wrote, so a captured
photo is labelled by the generator's ground truth: the image with the same sha256 there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from liveml.data.feedback import DATA_SPLITS, sha256_file
from liveml.tasks.base import Example

LABEL_KEYS = ("image", "annotations", "categories")


def _ann_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "annotations" / f"{split}.json"


def _read_coco(data_dir: Path, split: str) -> dict:
    path = _ann_file(data_dir, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: no split {split!r} there; fix: pass a dataset folder in the "
            "defects layout (made by its generator or by liveml.data.feedback.write_version) "
            "and one of its splits."
        )
    return json.loads(path.read_text())


def read_split(data_dir: Path, split: str) -> list[Example]:
    """The examples of one split, in the COCO file's image order."""
    data_dir = Path(data_dir)
    coco = _read_coco(data_dir, split)
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(
            {k: v for k, v in ann.items() if k not in ("id", "image_id")}
        )
    examples = []
    for img in coco["images"]:
        record = {k: v for k, v in img.items() if k not in ("id", "file_name")}
        label = {
            "image": record,
            "annotations": by_image[img["id"]],
            "categories": coco["categories"],
        }
        path = data_dir / img["file_name"]
        examples.append(Example(path, label, stem=Path(img["file_name"]).stem))
    return examples


def write_split(data_dir: Path, split: str, examples: list[Example]) -> None:
    """Write `examples` as `split`: photos under images/<split>/, the COCO file last. The
    split's COCO `info` (the recipe) is kept when the file exists."""
    from liveml.core.atomic import atomic_write_text

    data_dir = Path(data_dir)
    categories = _one_categories([e.label["categories"] for e in examples])
    ann_file = _ann_file(data_dir, split)
    old = json.loads(ann_file.read_text()) if ann_file.is_file() else None
    if categories is None:  # no examples: the categories the split had, if any
        categories = old["categories"] if old else []
    images, annotations, copies, names = [], [], [], set()
    for i, example in enumerate(examples):
        stem = example.stem or f"{split}_{i:05d}"
        name = f"images/{split}/{stem}{Path(example.input).suffix.lower() or '.png'}"
        if name in names:
            raise ValueError(f"two examples of split {split!r} would both be stored as {name}")
        names.add(name)
        extra = {k: v for k, v in example.label.items() if k not in LABEL_KEYS}
        images.append({"id": i + 1, "file_name": name, **example.label["image"], **extra})
        for ann in example.label["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
        copies.append((Path(example.input), data_dir / name))
    (data_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    for src, dest in copies:
        if not (dest.exists() and os.path.samefile(src, dest)):
            shutil.copyfile(src, dest)
    coco = {
        "info": old["info"] if old and "info" in old else {"split": split},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    atomic_write_text(ann_file, json.dumps(coco, indent=1) + "\n")  # as the generator writes it


def _one_categories(lists: list[list[dict]]) -> list[dict] | None:
    """The categories all labels share; differing ones would make one file's ids ambiguous."""
    distinct = {json.dumps(c, sort_keys=True) for c in lists}
    if len(distinct) > 1:
        raise ValueError(
            f"the labelled inputs come from datasets with different categories {sorted(distinct)}"
            "; fix: build the truth from datasets generated for the same task.classes."
        )
    return lists[0] if lists else None


def ground_truth(source_dirs: list[Path]) -> dict[str, dict]:
    """sha256 of every image in generator-made datasets (all splits) -> its label plus
    "source": {"dir", "split", "file"}. The first folder holding given bytes wins."""
    truth: dict[str, dict] = {}
    for source in map(Path, source_dirs):
        found = False
        for split in DATA_SPLITS:
            if not _ann_file(source, split).is_file():
                continue
            found = True
            for example in read_split(source, split):
                where = {
                    "dir": str(source),
                    "split": split,
                    "file": example.input.relative_to(source).as_posix(),
                }
                truth.setdefault(sha256_file(example.input), {**example.label, "source": where})
        if not found:
            raise FileNotFoundError(
                f"{source} holds no annotations/<split>.json; fix: pass folders written by the "
                "defects generator (`get_task('defects').generate(cfg, out_dir)`)."
            )
    return truth


def feedback_rejects(data_dir: Path, examples: list[Example]) -> list[str | None]:
    """ "size" for a photo of another size than the data's train photos; ValueError when the
    version's categories differ from the data's (their ids would mean other classes)."""
    base = _read_coco(Path(data_dir), "train")
    for example in examples:
        if example.label["categories"] != base["categories"]:
            raise ValueError(
                f"feedback example {example.input}: categories {example.label['categories']} "
                f"differ from the data's {base['categories']}; fix: label feedback for the "
                "same task.classes, or leave this version out."
            )
    sizes = {(img["width"], img["height"]) for img in base["images"]}
    return [
        "size"
        if sizes and (e.label["image"]["width"], e.label["image"]["height"]) not in sizes
        else None
        for e in examples
    ]


def quality(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
    """mAP@0.5 of an eval-mode detector on one split of a dataset in the defects layout (the
    pipeline's data or a feedback version); None when the split holds no boxes to score."""
    from liveml.tasks.defects.evaluation import detection_quality, load_split, predict

    _read_coco(Path(data_dir), split)  # a missing split: the error with the fix
    images, targets = load_split(Path(data_dir), split)
    model = getattr(module, "model", module)
    preds = predict(model, images, int(cfg.model.batch_size))
    return detection_quality(preds, targets, list(cfg.task.classes))["metrics"]["map_50"]
