"""Typed schemas of the defects task's `model` and `data` config groups: types only, every value
lives in conf/model/ and conf/data/ (MISSING here, so `check` names a key the YAML lacks)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class DefectsDataConfig:
    """The recipe of the synthetic photos. The capture conditions (brightness ... angle) are
    what drifts in production; they sit at the top of `data` so a sweep reads
    `data.brightness=0.5,1.0`."""

    seed: int = MISSING
    image_size: int = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING
    max_defects: int = MISSING
    brightness: float = MISSING  # multiplier on the screen's luminance (0.7 = 30% darker)
    brightness_jitter: float = MISSING  # per-image relative spread around `brightness`
    scratch_length: float = MISSING  # mean scratch length as a fraction of the image side
    blur: float = MISSING  # max Gaussian blur sigma in pixels
    noise: float = MISSING  # camera noise std as a fraction of full scale
    glare: float = MISSING  # probability of a glare patch on an image
    angle: float = MISSING  # max camera roll in degrees


@dataclass
class FcosConfig:
    name: str = MISSING
    channels: list[int] = MISSING
    blocks: list[int] = MISSING  # residual blocks per stage
    fpn_channels: int = MISSING
    head_convs: int = MISSING
    # Small boxes get at least this many positive locations (0: plain FCOS).
    min_positives: int = MISSING
    score_thresh: float = MISSING
    nms_thresh: float = MISSING
    detections_per_img: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_frac: float = MISSING  # share of the one-cycle schedule spent warming the LR up
    batch_size: int = MISSING
