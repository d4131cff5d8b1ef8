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

    def __init__(self, channels: list[int], fpn_channels: int) -> None:
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Sequential(_conv_bn(3, c0, stride=2), _conv_bn(c0, c0, stride=2))
        stages = [ResidualBlock(c0)]
        for c_in, c_out in itertools.pairwise(channels):
            stages.append(nn.Sequential(_conv_bn(c_in, c_out, stride=2), ResidualBlock(c_out)))
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
    backbone = PyramidBackbone(channels, int(model_cfg.fpn_channels))
    # One anchor per location whose size equals the level stride (the FCOS convention): it sets
    # each level's object-size range [4, 8] x stride and the regression normalisation.
    anchors = AnchorGenerator(
        tuple((s,) for s in level_strides(model_cfg)), ((1.0,),) * len(channels)
    )
    return FCOS(
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
    )
