"""The defects detector: torchvision FCOS on a small from-scratch conv backbone with an FPN.

Everything is assembled from torchvision parts so the model scripts with `torch.jit.script`
and exports like any torchvision detector; no pretrained weights are needed or downloaded.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import (
    FCOSClassificationHead,
    FCOSHead,
    FCOSRegressionHead,
)
from torchvision.ops import FeaturePyramidNetwork

# The first stage's stride: two stride-2 convs in the stem. Stride 4 keeps ~4 px dead-pixel
# spots visible to the FCOS assignment, which only picks grid points inside a box.
FIRST_STRIDE = 4


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convs with an identity skip: trains reliably from scratch at this depth."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # Zero-init the last BN so each block starts as the identity (stable early training).
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.bn2(self.conv2(self.conv1(x))))


class PyramidBackbone(nn.Module):
    """Conv stages at strides 4, 8, 16, ... (one per `channels` entry) followed by an FPN.

    BatchNorm in the backbone: batches of 16 images of 160 px give ample statistics and BN
    is the fastest norm on CPU (it folds into the convs at inference).
    """

    def __init__(self, channels: list[int], blocks: list[int], fpn_channels: int) -> None:
        super().__init__()
        if len(blocks) != len(channels):
            raise ValueError(f"model.blocks {blocks} needs one entry per stage of {channels}")
        c0 = channels[0]
        self.stem = nn.Sequential(_conv_bn(3, c0, stride=2), _conv_bn(c0, c0, stride=2))
        stages = [nn.Sequential(*[ResidualBlock(c0) for _ in range(blocks[0])])]
        for (c_in, c_out), n in zip(itertools.pairwise(channels), blocks[1:], strict=True):
            down = _conv_bn(c_in, c_out, stride=2)
            stages.append(nn.Sequential(down, *[ResidualBlock(c_out) for _ in range(n)]))
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.fpn = FeaturePyramidNetwork(list(channels), fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        feats: dict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i)] = x
        return self.fpn(feats)


class DefectsFCOS(FCOS):
    """FCOS whose target assignment also supervises boxes smaller than the finest stride.

    Plain FCOS only trains locations strictly inside a box: a 3-4 px dead-pixel spot often holds
    one grid point of the stride-4 level or none, so ~15% of spots were never positives. Here a
    box with fewer than `min_positives` positives also gets its nearest finest-level locations
    (those still unassigned); its regression target is widened by at most a pixel or two so
    those locations lie inside it. Everything else is torchvision's FCOS.
    """

    def __init__(self, *args: Any, min_positives: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_positives = min_positives

    def match(self, gt_boxes: Tensor, anchors: Tensor, num_anchors_per_level: list[int]) -> Tensor:
        """Index of the box each anchor is a positive for, -1 for background."""
        # torchvision's FCOS rule: centre sampling, inside the box, level by object size.
        gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        anchor_sizes = anchors[:, 2] - anchors[:, 0]
        pairwise_match = (anchor_centers[:, None, :] - gt_centers[None, :, :]).abs_().max(
            dim=2
        ).values < self.center_sampling_radius * anchor_sizes[:, None]
        x, y = anchor_centers.unsqueeze(dim=2).unbind(dim=1)
        x0, y0, x1, y1 = gt_boxes.unsqueeze(dim=0).unbind(dim=2)
        pairwise_dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)
        pairwise_match &= pairwise_dist.min(dim=2).values > 0
        lower_bound = anchor_sizes * 4
        lower_bound[: num_anchors_per_level[0]] = 0
        upper_bound = anchor_sizes * 8
        upper_bound[-num_anchors_per_level[-1] :] = float("inf")
        max_dist = pairwise_dist.max(dim=2).values
        pairwise_match &= (max_dist > lower_bound[:, None]) & (max_dist < upper_bound[:, None])
        gt_areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        scores = pairwise_match.to(torch.float32) * (1e8 - gt_areas[None, :])
        best, matched = scores.max(dim=1)
        matched[best < 1e-5] = -1

        # Small boxes: top up with their nearest free finest-level locations, smallest box
        # first so that it wins a contested location (as in the rule above).
        n0 = num_anchors_per_level[0]
        k = min(self.min_positives, n0)
        if k > 0:
            counts = torch.bincount(matched[matched >= 0], minlength=gt_boxes.shape[0])
            dist = (anchor_centers[:n0, None, :] - gt_centers[None, :, :]).pow(2).sum(dim=2)
            nearest = dist.topk(k, dim=0, largest=False).indices  # (k, M)
            order: list[int] = torch.argsort(gt_areas).tolist()
            for j in order:
                if int(counts[j]) < k:
                    free = nearest[:, j][matched[nearest[:, j]] < 0]
                    matched[free] = j
        return matched

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        num_anchors_per_level: list[int],
    ) -> dict[str, Tensor]:
        # Per-anchor targets (box widened to contain its location), so the head's GIoU and
        # centre-ness losses stay well defined for positives just outside a tiny box.
        per_anchor: list[dict[str, Tensor]] = []
        matched_idxs: list[Tensor] = []
        for i, targets_per_image in enumerate(targets):  # TorchScript: no zip(strict=...)
            anchors_per_image = anchors[i]
            gt_boxes = targets_per_image["boxes"]
            if gt_boxes.numel() == 0:
                per_anchor.append(targets_per_image)
                matched_idxs.append(
                    torch.full(
                        (anchors_per_image.size(0),), -1, dtype=torch.int64, device=gt_boxes.device
                    )
                )
                continue
            matched = self.match(gt_boxes, anchors_per_image, num_anchors_per_level)
            boxes = gt_boxes[matched.clip(min=0)]
            centers = (anchors_per_image[:, :2] + anchors_per_image[:, 2:]) / 2
            boxes = torch.cat(
                [
                    torch.minimum(boxes[:, :2], centers - 0.5),
                    torch.maximum(boxes[:, 2:], centers + 0.5),
                ],
                dim=1,
            )
            per_anchor.append(
                {"boxes": boxes, "labels": targets_per_image["labels"][matched.clip(min=0)]}
            )
            identity = torch.arange(matched.numel(), device=matched.device)
            matched_idxs.append(torch.where(matched >= 0, identity, -1))
        return self.head.compute_loss(per_anchor, head_outputs, anchors, matched_idxs)


def _head(fpn_channels: int, num_classes: int, num_convs: int) -> FCOSHead:
    """FCOSHead whose GroupNorm group count fits any `fpn_channels` (torchvision fixes 32)."""
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=num_convs)
    norm = partial(nn.GroupNorm, math.gcd(32, fpn_channels))
    head.classification_head = FCOSClassificationHead(
        fpn_channels, 1, num_classes, num_convs=num_convs, norm_layer=norm
    )
    head.regression_head = FCOSRegressionHead(fpn_channels, 1, num_convs=num_convs, norm_layer=norm)
    return head


def level_strides(model_cfg: Any) -> list[int]:
    """Stride of each pyramid level (one level per backbone stage)."""
    return [FIRST_STRIDE * 2**i for i in range(len(model_cfg.channels))]


def build_detector(model_cfg: Any, num_classes: int, image_size: int) -> FCOS:
    """An FCOS detector for `num_classes` classes on square `image_size` px images.

    Labels are 1-based (0 is background in torchvision's convention), so the head predicts
    `num_classes + 1` logits and label 0 is never a target.
    """
    channels = [int(c) for c in model_cfg.channels]
    blocks = [int(n) for n in model_cfg.blocks]
    backbone = PyramidBackbone(channels, blocks, int(model_cfg.fpn_channels))
    # One anchor per location whose size equals the level stride (the FCOS convention): it sets
    # each level's object-size range [4, 8] x stride and the regression normalisation.
    anchors = AnchorGenerator(
        tuple((s,) for s in level_strides(model_cfg)), ((1.0,),) * len(channels)
    )
    return DefectsFCOS(
        backbone,
        num_classes=num_classes + 1,
        # min_size = max_size = the data's size: GeneralizedRCNNTransform would otherwise
        # upscale every image to 800 px.
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        anchor_generator=anchors,
        head=_head(int(model_cfg.fpn_channels), num_classes + 1, int(model_cfg.head_convs)),
        score_thresh=float(model_cfg.score_thresh),
        nms_thresh=float(model_cfg.nms_thresh),
        detections_per_img=int(model_cfg.detections_per_img),
        min_positives=int(model_cfg.min_positives),
    )
