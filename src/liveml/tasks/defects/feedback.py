"""Labelled feedback data of the defects task: captured production photos, labelled, versioned
and merged into the training data, so a retrained challenger learns the drifted inputs.

The traffic sent to the server comes from folders the defects generator wrote, so a captured
photo is labelled by the generator's ground truth: the image with the same sha256 there. A
feedback version is a dataset in the task's layout with splits `train` and `test`; `merge`
appends versions' train splits to freshly generated data (the generate stage's output).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from liveml.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from liveml.data.feedback import (
    VERSION_SPLITS,
    in_holdout,
    label,
    sha256_file,
    version_name,
)

__all__ = ["ground_truth", "in_holdout", "merge", "quality", "write_version"]

SPLITS = ("train", "val", "test")  # what the generator writes


def ground_truth(source_dirs: list[Path]) -> dict[str, dict]:
    """sha256 of every image in generator-made datasets (all splits) -> its label record:
    {"image": COCO image record, "annotations": [...], "categories": [...],
     "source": {"dir", "split", "file"}}. The first folder holding given bytes wins."""
    truth: dict[str, dict] = {}
    for source in map(Path, source_dirs):
        found = False
        for split in SPLITS:
            ann_file = source / "annotations" / f"{split}.json"
            if not ann_file.is_file():
                continue
            found = True
            coco = json.loads(ann_file.read_text())
            by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
            for ann in coco["annotations"]:
                by_image[ann["image_id"]].append(ann)
            for img in coco["images"]:
                sha = sha256_file(source / img["file_name"])
                truth.setdefault(
                    sha,
                    {
                        "image": img,
                        "annotations": by_image[img["id"]],
                        "categories": coco["categories"],
                        "source": {"dir": str(source), "split": split, "file": img["file_name"]},
                    },
                )
        if not found:
            raise FileNotFoundError(
                f"{source} holds no annotations/<split>.json; fix: pass folders written by the "
                "defects generator (`get_task('defects').generate(cfg, out_dir)`)."
            )
    return truth


def write_version(
    inputs: list[Path],
    truth: dict[str, dict],
    out_dir: Path,
    *,
    holdout: float = 0.3,
    provenance: dict | None = None,
) -> dict:
    """Write the labelled `inputs` as a dataset (splits train/test, COCO) at `out_dir`.

    Bytes are copied unchanged; the test split is the `holdout` share chosen by `in_holdout`.
    Inputs without a label are skipped and counted, as are repeats of the same bytes.
    `provenance` (e.g. the capture records and drift report) goes to provenance.json, which
    `merge` lists. Written atomically. Returns {"train", "test", "unlabelled", "duplicates",
    "inputs"} counts.
    """
    labelled, unlabelled, duplicates = label(inputs, truth, holdout, "images")
    categories = _one_categories([rec["categories"] for _, rec in labelled.values()])
    splits: dict[str, list[str]] = {split: [] for split in VERSION_SPLITS}
    for sha in sorted(labelled):  # by hash: the same inputs give the same folder in any order
        splits["test" if in_holdout(sha, holdout) else "train"].append(sha)
    with atomic_dir(out_dir) as tmp:
        for split, shas in splits.items():
            (tmp / "images" / split).mkdir(parents=True)
            images, annotations = [], []
            for i, sha in enumerate(shas):
                path, rec = labelled[sha]
                name = f"images/{split}/{split}_{i:05d}.png"
                shutil.copyfile(path, tmp / name)
                image = {**rec["image"], "id": i + 1, "file_name": name}
                images.append(image | {"sha256": sha, "source": rec["source"]})
                for ann in rec["annotations"]:
                    annotations.append({**ann, "id": len(annotations) + 1, "image_id": i + 1})
            coco = {
                "info": {"feedback": True, "split": split},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            _write_coco(tmp / "annotations" / f"{split}.json", coco)
        if provenance is not None:
            atomic_write_json(tmp / "provenance.json", provenance)
    return {
        "train": len(splits["train"]),
        "test": len(splits["test"]),
        "unlabelled": unlabelled,
        "duplicates": duplicates,
        "inputs": len(inputs),
    }


def _one_categories(lists: list[list[dict]]) -> list[dict]:
    """The categories all labels share; differing ones would make one version's ids ambiguous."""
    distinct = {json.dumps(c, sort_keys=True) for c in lists}
    if len(distinct) > 1:
        raise ValueError(
            f"the labelled inputs come from datasets with different categories {sorted(distinct)}"
            "; fix: build the truth from datasets generated for the same task.classes."
        )
    return lists[0]


def _write_coco(path: Path, coco: dict) -> None:
    atomic_write_text(path, json.dumps(coco, indent=1) + "\n")  # as the generator writes it


def merge(data_dir: Path, versions: list[Path]) -> dict:
    """Append every version's train split to the dataset at `data_dir`, in place.

    Images become `images/train/fb-<version>-<i>.png`, COCO ids continue after the existing
    ones. Skipped (and counted per version): bytes already in the data (any split: a copy of a
    val/test photo in train is split leakage) and photos of another size than the data's.
    Writes data_dir/feedback.json ([{version, train, skipped, provenance}]). `versions == []`
    changes nothing. Returns {"train": appended, "versions": those entries}.
    """
    data_dir = Path(data_dir)
    if not versions:
        return {"train": 0, "versions": []}
    ann_file = data_dir / "annotations" / "train.json"
    base = json.loads(ann_file.read_text())
    # Everything read and checked first: a bad version must not leave the data half merged.
    loaded = [
        (version_name(v, versions), Path(v), _version_train(v, base), _provenance(v))
        for v in versions
    ]
    sizes = {(img["width"], img["height"]) for img in base["images"]}
    seen = {  # every photo already in the data, all splits
        sha256_file(data_dir / img["file_name"])
        for split in SPLITS
        for img in json.loads((data_dir / "annotations" / f"{split}.json").read_text())["images"]
    }
    next_image = max((img["id"] for img in base["images"]), default=0) + 1
    next_ann = max((ann["id"] for ann in base["annotations"]), default=0) + 1
    entries = []
    for name, version, coco, provenance in loaded:
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        skipped = {"duplicate": 0, "size": 0}
        appended = 0
        for img in sorted(coco["images"], key=lambda im: im["id"]):
            src = version / img["file_name"]
            sha = sha256_file(src)
            if sha in seen:
                skipped["duplicate"] += 1
                continue
            if sizes and (img["width"], img["height"]) not in sizes:
                skipped["size"] += 1
                continue
            seen.add(sha)
            dest = f"images/train/fb-{name}-{appended:05d}.png"
            shutil.copyfile(src, data_dir / dest)
            base["images"].append(
                {**img, "id": next_image, "file_name": dest, "sha256": sha, "feedback": name}
            )
            for ann in by_image[img["id"]]:
                base["annotations"].append({**ann, "id": next_ann, "image_id": next_image})
                next_ann += 1
            next_image += 1
            appended += 1
        entries.append(
            {
                "version": name,
                "train": appended,
                "skipped": skipped,
                "provenance": provenance,
            }
        )
    _write_coco(ann_file, base)
    atomic_write_json(data_dir / "feedback.json", entries)
    return {"train": sum(e["train"] for e in entries), "versions": entries}


def _version_train(version: Path, base: dict) -> dict:
    """The version's train COCO, checked against the data before anything is written."""
    ann_file = Path(version) / "annotations" / "train.json"
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"{ann_file} is missing; fix: pass folders written by feedback.write_version."
        )
    coco = json.loads(ann_file.read_text())
    if coco["categories"] != base["categories"]:
        raise ValueError(
            f"{ann_file}: categories {coco['categories']} differ from the data's "
            f"{base['categories']}; fix: label feedback for the same task.classes, or leave "
            "this version out."
        )
    return coco


def _provenance(version: Path) -> Any:
    path = Path(version) / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else None


def quality(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> dict:
    """mAP@0.5 of an eval-mode detector on one split of a dataset in the defects layout (the
    pipeline's data or a feedback version): {"metric", "value", "higher_is_better", "n"}.
    `value` is None when the split holds no boxes to score."""
    from liveml.tasks.defects.evaluation import detection_quality, load_split, predict

    ann_file = Path(data_dir) / "annotations" / f"{split}.json"
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"{ann_file} is missing; fix: pass a defects dataset folder and one of its splits."
        )
    if not json.loads(ann_file.read_text())["images"]:
        raise ValueError(
            f"{ann_file} lists no images, so there is nothing to score; fix: label more inputs "
            "or use a larger holdout."
        )
    images, targets = load_split(Path(data_dir), split)
    model = getattr(module, "model", module)
    preds = predict(model, images, int(cfg.model.batch_size))
    metrics = detection_quality(preds, targets, list(cfg.task.classes))["metrics"]
    return {
        "metric": "map_50",
        "value": metrics["map_50"],
        "higher_is_better": True,
        "n": len(images),
    }
