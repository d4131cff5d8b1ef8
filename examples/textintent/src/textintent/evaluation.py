"""Quality on a split: accuracy (the headline) and macro-F1 from torchmetrics, F1 per intent,
and the (actual, predicted) pairs DVC draws as a confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from liveml.core.atomic import atomic_write_csv
from torch import Tensor

from textintent.data import load_split

CONFUSION = "confusion.csv"


def split_of(cfg: Any, data_dir: Path, split: str) -> tuple[Tensor, Tensor]:
    m = cfg.model
    return load_split(
        Path(data_dir), split, list(cfg.task.classes), int(m.n_buckets), int(m.max_tokens)
    )


@torch.inference_mode()
def predict(module: Any, ids: Tensor, batch_size: int = 256) -> Tensor:
    """Class probabilities [n, C] of an eval-mode module, on CPU."""
    net = getattr(module, "model", module).eval()
    device = next(net.parameters()).device
    out = [
        torch.softmax(net(ids[i : i + batch_size].to(device)), dim=-1).cpu()
        for i in range(0, len(ids), batch_size)
    ]
    return torch.cat(out)


def scores(probs: Tensor, labels: Tensor, classes: list[str]) -> dict:
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    k = len(classes)
    per_class = multiclass_f1_score(probs, labels, num_classes=k, average="none")
    return {
        "accuracy": float(multiclass_accuracy(probs, labels, num_classes=k, average="micro")),
        "macro_f1": float(multiclass_f1_score(probs, labels, num_classes=k, average="macro")),
        **{f"f1/{c}": round(float(f), 6) for c, f in zip(classes, per_class, strict=True)},
    }


def evaluate(cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
    """Scores on the test split; writes `confusion.csv` (actual, predicted) into plots_dir."""
    classes = list(cfg.task.classes)
    ids, labels = split_of(cfg, data_dir, "test")
    probs = predict(module, ids)
    pairs = [
        (classes[int(a)], classes[int(p)]) for a, p in zip(labels, probs.argmax(-1), strict=True)
    ]
    atomic_write_csv(Path(plots_dir) / CONFUSION, ("actual", "predicted"), pairs)
    return {**scores(probs, labels, classes), "n_test": len(labels)}


def quality(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
    """Accuracy of `module` on one split of a dataset folder (the pipeline's data or a
    feedback version); None for an empty split."""
    from textintent.layout import read_manifest

    if not read_manifest(Path(data_dir), split):
        return None
    ids, labels = split_of(cfg, data_dir, split)
    probs = predict(module, ids)
    return float((probs.argmax(-1) == labels).float().mean())
