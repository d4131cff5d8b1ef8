"""Typed schemas of the defects task's `model` and `data` config groups."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DefectsDataConfig:
    """The recipe of the synthetic photos. The capture conditions (brightness ... angle) are
    what drifts in production; they sit at the top of `data` so a sweep reads
    `data.brightness=0.5,1.0`."""

    seed: int = 0
    image_size: int = 160
    n_train: int = 1200
    n_val: int = 200
    n_test: int = 300
    max_defects: int = 3
    brightness: float = 1.0  # multiplier on the screen's luminance (0.7 = 30% darker)
    brightness_jitter: float = 0.15  # per-image relative spread around `brightness`
    scratch_length: float = 0.35  # mean scratch length as a fraction of the image side
    blur: float = 0.6  # max Gaussian blur sigma in pixels
    noise: float = 0.02  # camera noise std as a fraction of full scale
    glare: float = 0.3  # probability of a glare patch on an image
    angle: float = 4.0  # max camera roll in degrees


@dataclass
class FcosConfig:
    name: str = "fcos_tiny"
    channels: list[int] = field(default_factory=lambda: [24, 48, 96, 192])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # residual blocks per stage
    fpn_channels: int = 32
    head_convs: int = 2
    min_positives: int = 4  # small boxes get at least this many positive locations (0: plain FCOS)
    score_thresh: float = 0.2
    nms_thresh: float = 0.5
    detections_per_img: int = 20
    lr: float = 0.004
    weight_decay: float = 0.0001
    warmup_frac: float = 0.1  # share of the one-cycle schedule spent warming the LR up
    batch_size: int = 16
