"""The detector as a deployable: a torchvision detector behind a flat tensor signature that
TorchScript, ONNX and the server keep, and how its exported outputs are checked.

torchvision detection models take a list of images and return a list of dicts;
`DeployableDetector` takes one image batch and returns the detections of all images
concatenated, with the image each belongs to.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeployableDetector(nn.Module):
    """A torchvision detector behind a flat signature: images [N,3,H,W] float 0..1 in;
    boxes [K,4] xyxy pixels, scores [K], labels [K] (1-based class ids), image_index [K] out,
    the detections of all N images concatenated (image_index says which image each is from)."""

    input_names = ("images",)
    output_names = ("boxes", "scores", "labels", "image_index")

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        imgs = list(images.unbind(0))
        # Scripted torchvision detectors always return (losses, detections); eager ones the list.
        if torch.jit.is_scripting():
            _, dets = self.detector(imgs)
        else:
            dets = self.detector(imgs)
        index = [torch.full_like(d["labels"], i) for i, d in enumerate(dets)]
        return (
            torch.cat([d["boxes"] for d in dets]),
            torch.cat([d["scores"] for d in dets]),
            torch.cat([d["labels"] for d in dets]),
            torch.cat(index),
        )

    @staticmethod
    def signature(example: Tensor, batch: int | str = "N") -> dict:
        """Input/output signature in words and shapes (for the export info and model card)."""
        _, c, h, w = example.shape
        return {
            "inputs": [
                {
                    "name": "images",
                    "dtype": "float32",
                    "shape": [batch, c, h, w],
                    "meaning": "RGB images scaled to 0..1",
                }
            ],
            "outputs": [
                {
                    "name": "boxes",
                    "dtype": "float32",
                    "shape": ["K", 4],
                    "meaning": "x1, y1, x2, y2 in input pixels",
                },
                {"name": "scores", "dtype": "float32", "shape": ["K"], "meaning": "confidence"},
                {
                    "name": "labels",
                    "dtype": "int64",
                    "shape": ["K"],
                    "meaning": "1-based index into task.classes",
                },
                {
                    "name": "image_index",
                    "dtype": "int64",
                    "shape": ["K"],
                    "meaning": "which input image (0..N-1) the detection belongs to",
                },
            ],
        }


def as_deployable(detector: nn.Module) -> DeployableDetector:
    """The detector behind the flat signature, in eval mode: exports capture inference."""
    return DeployableDetector(detector).eval()


# Export options: the graph is traced, so the ONNX batch is the example's (K stays free: the
# exporter keeps data-dependent sizes); detections compare regardless of tied-score order.
def export_options(example: Tensor) -> dict:
    return {"dynamic_axes": {}, "compare": compare_detections, "check_info": check_info}


def compare_detections(ref: tuple[Tensor, ...], got: tuple[Tensor, ...], where: str) -> float:
    """Compare detection sets regardless of the order of tied scores: pair each eager detection
    with its closest exported one (same image and label) by optimal assignment."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from liveml.release.export import ExportError

    boxes, scores, labels, index = ref
    g_boxes, g_scores, g_labels, g_index = (t.to(r.dtype) for t, r in zip(got, ref, strict=True))
    if boxes.shape[0] != g_boxes.shape[0]:
        raise ExportError(
            f"{where}: {g_boxes.shape[0]} detections, eager model gives {boxes.shape[0]}"
        )
    if boxes.shape[0] == 0:
        return 0.0
    cost = torch.maximum(
        torch.cdist(boxes, g_boxes, p=float("inf")),
        (scores[:, None] - g_scores[None, :]).abs(),
    ).numpy()
    same = ((labels[:, None] == g_labels[None, :]) & (index[:, None] == g_index[None, :])).numpy()
    rows, cols = linear_sum_assignment(np.where(same, cost, 1e9))
    if not same[rows, cols].all():
        raise ExportError(f"{where}: labels or image indices differ from the eager model")
    return float(cost[rows, cols].max())


def check_info(refs: list[tuple[Tensor, ...]]) -> dict:
    """How many detections each check input compared (and a warning when none did)."""
    n_dets = [int(ref[0].shape[0]) for ref in refs]
    info: dict = {"check_detections": n_dets}
    if not any(n_dets):
        info["check_warning"] = (
            "no detections on any check input: only empty outputs were compared; "
            "pass real images as check_inputs"
        )
    return info
