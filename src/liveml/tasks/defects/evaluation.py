"""Evaluate a defects detector on the test split: COCO mAP, PR curves, confusion.

Quality comes from torchmetrics' COCO-style MeanAveragePrecision (pycocotools backend), not a
hand-written AP. Plot data is written in the shapes DVC's plot templates read:
`pr/<class>.csv` (recall, precision at IoU 0.5) and `confusion.csv` (actual, predicted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from liveml.core.atomic import atomic_write_csv

BACKGROUND = "background"
MATCH_IOU = 0.5


def load_split(data_dir: Path, split: str = "test") -> tuple[list[Tensor], list[dict]]:
    """Images (float [3,H,W] in 0..1) and targets ({boxes xyxy, labels}) of one split, as is."""
    from torchvision.io import ImageReadMode, decode_image

    data_dir = Path(data_dir)
    ann_file = data_dir / "annotations" / f"{split}.json"
    coco = json.loads(ann_file.read_text())
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    images, targets = [], []
    for img in coco["images"]:
        images.append(decode_image(str(data_dir / img["file_name"]), ImageReadMode.RGB) / 255.0)
        anns = by_image[img["id"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # COCO [x, y, w, h] -> [x1, y1, x2, y2]
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})
    if not images:
        raise ValueError(f"{ann_file} lists no images; fix: regenerate the data (`dvc repro`).")
    return images, targets


@torch.inference_mode()
def predict(model: torch.nn.Module, images: Sequence[Tensor], batch_size: int) -> list[dict]:
    """Eval-mode detections of `model` for `images`, on the model's device, returned on CPU."""
    model.eval()
    device = next(model.parameters()).device
    out: list[dict] = []
    for i in range(0, len(images), batch_size):
        batch = [img.to(device) for img in images[i : i + batch_size]]
        out += [{k: v.cpu() for k, v in d.items()} for d in model(batch)]
    return out


def detection_quality(preds: list[dict], targets: list[dict], classes: Sequence[str]) -> dict:
    """COCO mAP@[.5:.95], mAP@0.5, mAR@100 and per-class AP/AP50 (None for a class without
    test boxes), plus the per-class PR curves at IoU 0.5 as {class: [(recall, precision)]}."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True
    )
    metric.update(preds, targets)
    r = metric.compute()
    out: dict[str, Any] = {
        "map_50": float(r["map_50"]),
        "map": float(r["map"]),
        "mar_100": float(r["mar_100"]),
    }
    recall_grid = metric.rec_thresholds
    # precision: [IoU thresholds, recall thresholds, classes, area ranges, max dets]; -1 = no GT.
    present = [int(c) for c in r["classes"].reshape(-1)]
    ap = r["map_per_class"].reshape(-1)
    curves: dict[str, list[tuple[float, float]]] = {}
    for cid, name in enumerate(classes, start=1):
        if cid not in present:
            out[f"ap/{name}"] = out[f"ap_50/{name}"] = None
            curves[name] = []
            continue
        k = present.index(cid)
        pr = r["precision"][0, :, k, 0, -1]  # IoU 0.5, all areas, most detections
        has_gt = bool((pr > -1).all())
        out[f"ap/{name}"] = float(ap[k]) if has_gt else None
        out[f"ap_50/{name}"] = float(pr.mean()) if has_gt else None
        # The recall grid is 0, 0.01, ..., 1 (COCO); rounding only drops float32 noise.
        points = zip(recall_grid, pr.tolist(), strict=True)
        curves[name] = [(round(float(x), 4), round(p, 6)) for x, p in points] if has_gt else []
    for key in ("map", "map_50", "mar_100"):  # torchmetrics says -1 when nothing is scorable
        out[key] = None if out[key] < 0 else out[key]
    return {"metrics": out, "pr_curves": curves}


def confusion_pairs(
    preds: list[dict],
    targets: list[dict],
    classes: Sequence[str],
    score_thresh: float,
    iou_thresh: float = MATCH_IOU,
) -> list[tuple[str, str]]:
    """(actual, predicted) per ground-truth box and per unmatched detection.

    Detections at or above `score_thresh` are matched greedily, highest score first, to the
    unmatched ground-truth box of highest IoU >= `iou_thresh` whatever its class, so that a
    misclassified defect shows up as (true class, predicted class) rather than as a miss plus
    a false alarm. Misses are (class, background); false alarms (background, class).
    """
    from torchvision.ops import box_iou

    names = [BACKGROUND, *classes]  # 1-based class ids index straight into this
    pairs: list[tuple[str, str]] = []
    for pred, tgt in zip(preds, targets, strict=True):
        # Label 0 is torchvision's background logit: never a defect, like in the mAP.
        in_range = (pred["labels"] >= 1) & (pred["labels"] <= len(classes))
        keep = (pred["scores"] >= score_thresh) & in_range
        order = torch.argsort(pred["scores"][keep], descending=True)
        boxes, labels = pred["boxes"][keep][order], pred["labels"][keep][order]
        gt_boxes, gt_labels = tgt["boxes"], tgt["labels"]
        iou = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else None
        matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
        for d in range(len(boxes)):
            g = -1
            if iou is not None:
                cand = iou[d].masked_fill(matched, -1.0)
                best = int(cand.argmax())
                g = best if cand[best] >= iou_thresh else -1
            if g >= 0:
                matched[g] = True
                pairs.append((names[int(gt_labels[g])], names[int(labels[d])]))
            else:
                pairs.append((BACKGROUND, names[int(labels[d])]))
        pairs += [(names[int(gt_labels[g])], BACKGROUND) for g in (~matched).nonzero().flatten()]
    return pairs


def write_plots(plots_dir: Path, pr_curves: dict, pairs: list[tuple[str, str]]) -> None:
    """PR curve per class (`pr/<class>.csv`: recall, precision) and `confusion.csv`."""
    plots_dir = Path(plots_dir)
    for name, points in pr_curves.items():
        atomic_write_csv(plots_dir / "pr" / f"{name}.csv", ("recall", "precision"), points)
    atomic_write_csv(plots_dir / "confusion.csv", ("actual", "predicted"), pairs)


def evaluate(cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
    """Quality of `module.model` on the test split; writes DVC plot data to plots_dir. The
    evaluate stage adds the speed of the deployable and the scope check, and writes the
    metrics file."""
    model = getattr(module, "model", module)
    classes = list(cfg.task.classes)
    images, targets = load_split(Path(data_dir), "test")
    preds = predict(model, images, int(cfg.model.batch_size))
    quality = detection_quality(preds, targets, classes)
    pairs = confusion_pairs(preds, targets, classes, float(cfg.model.score_thresh))
    write_plots(Path(plots_dir), quality["pr_curves"], pairs)
    return {
        **quality["metrics"],
        "n_test_images": len(images),
        "n_test_boxes": sum(len(t["labels"]) for t in targets),
    }
