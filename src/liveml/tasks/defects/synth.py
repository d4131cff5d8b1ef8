"""Synthetic phone-screen photos with scratches, cracks and dead-pixel spots, as COCO detection.

A camera photographs phones lying on a desk; every defect is drawn as its own mask, so its box
is the bounding box of exactly the pixels it covers after the photo's camera roll. Each image
draws from its own RNG seeded by (seed, split, index): same recipe, same bytes, in any order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from liveml.tasks.defects.config import DefectsDataConfig

SPLITS = ("train", "val", "test")
PNG_COMPRESS_LEVEL = 1  # noisy photos barely compress: level 1 saves ~35% time for ~10% bytes
SUPERSAMPLE = 2  # defect strokes are drawn at 2x and averaged down: anti-aliased 1-2 px lines
MIN_BOX_SIDE = 3.0  # thinner boxes are padded symmetrically (a 1 px scratch still gets a box)
MIN_VISIBLE = 0.5  # drop a defect when less than this fraction of it survives clipping/cropping
P_NO_DEFECT = 0.05  # share of defect-free images: the detector must also learn "nothing here"
MIN_CONTRAST = 0.3  # a defect's luminance differs at least this much from the screen under it
# Stroke widths in pixels. A 1 px stroke averages to coverage <= 0.5 on a diagonal and would
# vanish from its own mask; 1.5 px still reads as a hairline.
THIN, THICK = 1.5, 2.0


@dataclass(frozen=True)
class Box:
    """Axis-aligned rectangle in pixels (x0, y0 inclusive; x1, y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Scene:
    """The un-rotated canvas: float RGB in [0, 1], screen mask, and where the screen lies."""

    rgb: np.ndarray  # (C, C, 3) float32
    screen: np.ndarray  # (C, C) float32 in [0, 1]
    screen_box: Box


@dataclass
class Capture:
    """Capture conditions actually used for one photo (written to its COCO record)."""

    brightness: float
    blur: float
    noise: float
    glare: bool
    angle: float


# ---------------------------------------------------------------------------------------------
# Public entry


def generate(data_cfg: Any, classes: list[str], out_dir: Path) -> dict:
    """Write all splits of the recipe `data_cfg` into `out_dir`; return counts per split/class."""
    recipe = as_recipe(data_cfg)
    unknown = [c for c in classes if c not in DEFECT_PAINTERS]
    if unknown:
        raise ValueError(
            f"defects generator cannot draw classes {unknown}; it knows {sorted(DEFECT_PAINTERS)}."
        )
    out_dir = Path(out_dir)
    for sub in ("images", "annotations"):  # stale files from a bigger run would change the hash
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    summary: dict[str, Any] = {"images": {}, "boxes": {}}
    for split_index, split in enumerate(SPLITS):
        coco = _generate_split(recipe, classes, out_dir, split, split_index)
        summary["images"][split] = len(coco["images"])
        summary["boxes"][split] = _count_classes(coco, classes)
    return summary


def as_recipe(data_cfg: Any) -> DefectsDataConfig:
    """The recipe as a plain, checked `DefectsDataConfig` (from a DictConfig, dataclass or dict)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(DefectsDataConfig), data_cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def split_size(recipe: DefectsDataConfig, split: str) -> int:
    return {"train": recipe.n_train, "val": recipe.n_val, "test": recipe.n_test}[split]


def image_rng(seed: int, split_index: int, index: int) -> np.random.Generator:
    """The RNG of one image: independent of generation order, distinct per split."""
    return np.random.default_rng(np.random.SeedSequence([seed, split_index, index]))


def _generate_split(
    recipe: DefectsDataConfig, classes: list[str], out_dir: Path, split: str, split_index: int
) -> dict:
    """Render and write one split's photos, then its COCO file; returns the COCO dict."""
    (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(split_size(recipe, split)):
        photo, capture, boxes = render_photo(
            recipe, classes, image_rng(recipe.seed, split_index, index), index
        )
        image = _image_record(index + 1, f"images/{split}/{split}_{index:05d}.png", recipe, capture)
        Image.fromarray(photo, "RGB").save(
            out_dir / image["file_name"], format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        images.append(image)
        for category_id, box in boxes:
            annotations.append(_annotation(len(annotations) + 1, image["id"], category_id, box))
    coco = {
        "info": {"recipe": dataclasses.asdict(recipe), "seed": recipe.seed, "split": split},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations" / f"{split}.json").write_text(json.dumps(coco, indent=1) + "\n")
    return coco


def _image_record(image_id: int, file_name: str, recipe: DefectsDataConfig, capture) -> dict:
    return {
        "id": image_id,
        "file_name": file_name,
        "width": recipe.image_size,
        "height": recipe.image_size,
        "capture": _rounded(dataclasses.asdict(capture)),
    }


def _annotation(ann_id: int, image_id: int, category_id: int, box: Box) -> dict:
    w, h = box.x1 - box.x0, box.y1 - box.y0
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [round(box.x0, 3), round(box.y0, 3), round(w, 3), round(h, 3)],
        "area": round(w * h, 3),
        "iscrowd": 0,
    }


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def _count_classes(coco: dict, classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for ann in coco["annotations"]:
        counts[classes[ann["category_id"] - 1]] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# One photo


def render_photo(
    recipe: DefectsDataConfig, classes: list[str], rng: np.random.Generator, index: int = 0
) -> tuple[np.ndarray, Capture, list[tuple[int, Box]]]:
    """One uint8 RGB photo, its capture conditions and its (category_id, box) labels."""
    # The recipe itself holds the capture conditions (brightness, blur, ..., angle).
    size, cap = recipe.image_size, recipe
    angle = float(rng.uniform(-cap.angle, cap.angle))
    canvas = _canvas_side(size, angle)
    offset = (canvas - size) // 2  # the photo is the centred size x size crop of the canvas
    scene = _draw_scene(rng, size, canvas, offset)

    boxes: list[tuple[int, Box]] = []
    for category_id in _defect_classes(rng, recipe.max_defects, len(classes), index):
        painter = DEFECT_PAINTERS[classes[category_id - 1]]
        visible = _visible_box(
            _defect_mask(painter, rng, scene, size, cap), scene.screen, angle, offset, size
        )
        if visible is None:
            continue
        mask, box = visible
        _composite(scene.rgb, mask, rng, *DEFECT_OPACITY[classes[category_id - 1]])
        boxes.append((category_id, box))

    glare = bool(rng.random() < cap.glare)
    if glare:
        _add_glare(scene.rgb, rng, scene.screen_box)
    photo = _crop(_rotate(_to_uint8(scene.rgb), angle), offset, size)
    capture = _draw_capture(rng, cap, glare, angle)
    return _apply_capture(photo, capture, rng), capture, boxes


def _draw_capture(rng: np.random.Generator, cap, glare: bool, angle: float) -> Capture:
    """This photo's exposure and blur, drawn around the recipe's capture conditions."""
    jitter = rng.uniform(1 - cap.brightness_jitter, 1 + cap.brightness_jitter)
    return Capture(
        brightness=float(cap.brightness * jitter),
        blur=float(rng.uniform(0.0, cap.blur)),
        noise=float(cap.noise),
        glare=glare,
        angle=angle,
    )


def _canvas_side(size: int, angle: float) -> int:
    """Side of a canvas whose rotation by `angle` still covers the centred size x size crop."""
    a = math.radians(abs(angle))
    side = math.ceil(size * (math.cos(a) + math.sin(a))) + 2
    return side + (side - size) % 2  # even margin: the crop is exactly centred


def _defect_classes(rng: np.random.Generator, max_defects: int, n_classes: int, index: int):
    """Category ids of this image's defects. The first cycles with the image index so that even a
    tiny split holds every class; the rest are drawn uniformly."""
    if max_defects <= 0 or rng.random() < P_NO_DEFECT:
        return []
    n = int(rng.integers(1, max_defects + 1))
    first = index % n_classes + 1
    return [first] + [int(c) + 1 for c in rng.integers(0, n_classes, size=n - 1)]


# ---------------------------------------------------------------------------------------------
# Scene: desk, phone bezel, lit screen


def _draw_scene(rng: np.random.Generator, size: int, canvas: int, offset: int) -> Scene:
    rgb = _desk(rng, canvas)
    phone = _phone_box(rng, size, offset)
    bezel_width = rng.uniform(0.03, 0.06) * size
    screen_box = Box(
        phone.x0 + bezel_width,
        phone.y0 + bezel_width,
        phone.x1 - bezel_width,
        phone.y1 - bezel_width,
    )
    bezel = _rounded_mask(canvas, phone, radius=rng.uniform(0.06, 0.1) * size)
    screen = _rounded_mask(canvas, screen_box, radius=rng.uniform(0.02, 0.05) * size)
    bezel_color = rng.uniform(0.02, 0.12) + rng.uniform(-0.015, 0.015, size=3)
    _blend(rgb, bezel, bezel_color.astype(np.float32))
    _blend(rgb, screen, _display(rng, canvas, screen_box))
    return Scene(rgb=rgb, screen=screen, screen_box=screen_box)


def _desk(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """A desk surface: a base colour with smooth, low-frequency shading."""
    base = rng.choice(DESK_COLORS) * rng.uniform(0.7, 1.15)
    shading = _smooth_field(rng, canvas, cells=4, amplitude=0.15)
    return np.clip(base[None, None, :] * (1.0 + shading[..., None]), 0, 1).astype(np.float32)


DESK_COLORS = np.array(
    [
        [0.55, 0.42, 0.30],  # wood
        [0.70, 0.70, 0.68],  # light grey laminate
        [0.35, 0.36, 0.40],  # dark grey mat
        [0.82, 0.80, 0.74],  # white desk
        [0.28, 0.40, 0.34],  # green cutting mat
    ]
)


def _smooth_field(rng: np.random.Generator, side: int, cells: int, amplitude: float) -> np.ndarray:
    """A smooth random field in [-amplitude, amplitude]: a small grid upsampled bicubically."""
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((side, side), Image.BICUBIC))


def _phone_box(rng: np.random.Generator, size: int, offset: int) -> Box:
    """The phone's outline in canvas pixels: fills most of the photo, portrait or landscape."""
    long_side, short_side = rng.uniform(0.84, 0.94) * size, rng.uniform(0.62, 0.8) * size
    w, h = (short_side, long_side) if rng.random() < 0.6 else (long_side, short_side)
    cx = offset + size / 2 + rng.uniform(-0.5, 0.5) * (size - w) * 0.8
    cy = offset + size / 2 + rng.uniform(-0.5, 0.5) * (size - h) * 0.8
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _rounded_mask(canvas: int, box: Box, radius: float) -> np.ndarray:
    img = Image.new("L", (canvas * SUPERSAMPLE,) * 2, 0)
    s = SUPERSAMPLE
    ImageDraw.Draw(img).rounded_rectangle(
        (box.x0 * s, box.y0 * s, box.x1 * s - 1, box.y1 * s - 1), radius=radius * s, fill=255
    )
    return _downsample(img)


def _display(rng: np.random.Generator, canvas: int, screen: Box) -> np.ndarray:
    """A lit display: a tinted vertical gradient with a status bar and a few UI cards."""
    hue = rng.uniform(0.35, 1.0, size=3)
    top = rng.uniform(0.35, 0.8) * hue / hue.max()
    bottom = np.clip(top * rng.uniform(0.7, 1.3) + rng.uniform(-0.08, 0.08, size=3), 0.1, 0.9)
    t = np.clip((np.arange(canvas) - screen.y0) / max(screen.y1 - screen.y0, 1.0), 0, 1)
    rgb = top[None, :] + t[:, None] * (bottom - top)[None, :]
    rgb = np.repeat(rgb[:, None, :], canvas, axis=1).astype(np.float32)
    ui = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(ui)
    w, h = screen.x1 - screen.x0, screen.y1 - screen.y0
    draw.rectangle((screen.x0, screen.y0, screen.x1, screen.y0 + 0.06 * h), fill=255)
    for _ in range(int(rng.integers(1, 5))):
        x0 = screen.x0 + rng.uniform(0.05, 0.5) * w
        y0 = screen.y0 + rng.uniform(0.1, 0.8) * h
        x1 = min(x0 + rng.uniform(0.25, 0.8) * w, screen.x1 - 0.05 * w)
        y1 = min(y0 + rng.uniform(0.08, 0.25) * h, screen.y1 - 0.03 * h)
        draw.rounded_rectangle((x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)), radius=3, fill=128)
    card = np.asarray(ui, dtype=np.float32) / 255.0
    # UI blocks are low-contrast shading, never thin lines: thin strokes are scratch territory.
    shade = rng.uniform(-0.18, 0.18)
    return np.clip(rgb * (1.0 + shade * 2 * card[..., None]), 0, 1)


def _blend(rgb: np.ndarray, mask: np.ndarray, color: np.ndarray) -> None:
    """In place: rgb = rgb * (1 - mask) + color * mask (color: RGB triple or an image)."""
    m = mask[..., None]
    rgb *= 1.0 - m
    rgb += m * color


# ---------------------------------------------------------------------------------------------
# Defects: each painter draws one defect's coverage mask (white on black) at SUPERSAMPLE scale;
# all take (draw, rng, screen box, image size, scale, capture config).


def _defect_mask(painter: Callable, rng: np.random.Generator, scene: Scene, size: int, capture):
    canvas = scene.rgb.shape[0]
    img = Image.new("L", (canvas * SUPERSAMPLE,) * 2, 0)
    painter(ImageDraw.Draw(img), rng, scene.screen_box, size, SUPERSAMPLE, capture)
    return _downsample(img)


def _paint_scratch(draw, rng, screen: Box, size: int, s: int, capture) -> None:
    """A thin, long, slightly curved line: a quadratic Bezier 1-2 px wide."""
    length = capture.scratch_length * size * rng.uniform(0.7, 1.3)
    theta = rng.uniform(0, math.pi)
    dx, dy = math.cos(theta) * length / 2, math.sin(theta) * length / 2
    cx = _uniform_inside(rng, screen.x0, screen.x1, abs(dx))
    cy = _uniform_inside(rng, screen.y0, screen.y1, abs(dy))
    bend = rng.uniform(-0.12, 0.12) * length  # control point offset perpendicular to the line
    ctrl = (cx - math.sin(theta) * bend, cy + math.cos(theta) * bend)
    t = np.linspace(0, 1, 16)[:, None]
    p0, p2 = np.array([cx - dx, cy - dy]), np.array([cx + dx, cy + dy])
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * np.array(ctrl) + t**2 * p2
    _stroke(draw, pts.tolist(), s, width=THIN if rng.random() < 0.5 else THICK)


def _paint_crack(draw, rng, screen: Box, size: int, s: int, capture) -> None:
    """A spider-web crack: jagged rays with branches from an impact point, plus web arcs."""
    cx = rng.uniform(screen.x0 + 0.1 * size, screen.x1 - 0.1 * size)
    cy = rng.uniform(screen.y0 + 0.1 * size, screen.y1 - 0.1 * size)
    n_rays = int(rng.integers(4, 8))
    base = rng.uniform(0, 2 * math.pi)
    reach = rng.uniform(0.12, 0.25) * size
    rays = []
    for k in range(n_rays):
        heading = base + 2 * math.pi * k / n_rays + rng.uniform(-0.3, 0.3)
        ray = _jagged_path(rng, (cx, cy), heading, reach * rng.uniform(0.6, 1.2), steps=6)
        rays.append(ray)
        _stroke(draw, ray, s, width=THICK if k % 2 else THIN)
        if rng.random() < 0.6:  # a branch forks off the middle of the ray
            fork = ray[len(ray) // 2]
            branch_heading = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
            _stroke(draw, _jagged_path(rng, fork, branch_heading, reach * 0.4, steps=3), s, THIN)
    ring = int(rng.integers(2, 4))  # web: join neighbouring rays at a similar radius
    for a, b in zip(rays, rays[1:] + rays[:1], strict=True):
        if rng.random() < 0.7:
            _stroke(draw, [a[min(ring, len(a) - 1)], b[min(ring, len(b) - 1)]], s, THIN)
    r = rng.uniform(1.0, 2.0) * s  # shattered impact point
    draw.ellipse((cx * s - r, cy * s - r, cx * s + r, cy * s + r), fill=255)


def _jagged_path(
    rng, start, heading: float, length: float, steps: int
) -> list[tuple[float, float]]:
    pts = [start]
    x, y = start
    for _ in range(steps):
        h = heading + rng.uniform(-0.45, 0.45)
        step = length / steps * rng.uniform(0.6, 1.4)
        x, y = x + math.cos(h) * step, y + math.sin(h) * step
        pts.append((x, y))
    return pts


def _stroke(draw, pts, s: int, width: float) -> None:
    draw.line([(x * s, y * s) for x, y in pts], fill=255, width=round(width * s), joint="curve")


def _paint_spot(draw, rng, screen: Box, size: int, s: int, capture) -> None:
    """A dead-pixel cluster: a small blob (4-9 px across) with a few stray pixels around it."""
    cx = rng.uniform(screen.x0 + 5, screen.x1 - 5)
    cy = rng.uniform(screen.y0 + 5, screen.y1 - 5)
    rx, ry = rng.uniform(1.5, 3.5, size=2)
    draw.ellipse(((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s), fill=255)
    for _ in range(int(rng.integers(0, 4))):
        px = round(cx + rng.uniform(-1.2, 1.2) * rx)
        py = round(cy + rng.uniform(-1.2, 1.2) * ry)
        draw.rectangle((px * s, py * s, (px + 1) * s - 1, (py + 1) * s - 1), fill=255)


def _uniform_inside(rng, lo: float, hi: float, half_extent: float) -> float:
    """A centre in [lo, hi] keeping +-half_extent inside when it fits (else the middle)."""
    if hi - lo > 2 * half_extent:
        return float(rng.uniform(lo + half_extent, hi - half_extent))
    return (lo + hi) / 2


DEFECT_PAINTERS: dict[str, Callable] = {
    "scratch": _paint_scratch,
    "crack": _paint_crack,
    "spot": _paint_spot,
}
# (min, max) opacity: scratches are faint marks on the glass, dead pixels are solid.
DEFECT_OPACITY = {"scratch": (0.55, 0.85), "crack": (0.75, 0.95), "spot": (0.9, 1.0)}


def _composite(rgb: np.ndarray, mask: np.ndarray, rng, lo: float, hi: float) -> None:
    """Paint a defect: dark or bright (at random), flipped if it would vanish on its screen."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # only where the defect is
    rgb, mask = rgb[window], mask[window]  # views: the blend below writes through
    weight = mask.sum()
    under = (rgb * mask[..., None]).sum(axis=(0, 1)) / max(weight, 1e-6)
    luminance = float(under @ LUMA)
    level = rng.uniform(0.0, 0.2) if rng.random() < 0.5 else rng.uniform(0.85, 1.0)
    if abs(level - luminance) < MIN_CONTRAST:
        level = 1.0 - level
    color = np.float32(level) + rng.uniform(-0.04, 0.04, size=3).astype(np.float32)
    _blend(rgb, mask * np.float32(rng.uniform(lo, hi)), np.clip(color, 0, 1))


LUMA = np.array([0.299, 0.587, 0.114])


# ---------------------------------------------------------------------------------------------
# Geometry shared by the photo and the defect masks (so boxes match the pixels exactly)


def _rotate(img: Image.Image, angle: float) -> Image.Image:
    return img.rotate(angle, resample=Image.BILINEAR)


def _crop(img: Image.Image, offset: int, size: int) -> Image.Image:
    return img.crop((offset, offset, offset + size, offset + size))


def _downsample(img: Image.Image) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks: coverage in [0, 1] as float32."""
    return np.asarray(img.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def _visible_box(
    raw: np.ndarray, screen: np.ndarray, angle: float, offset: int, size: int
) -> tuple[np.ndarray, Box] | None:
    """The defect's on-screen mask and the box of its pixels (coverage > 0.5) after the photo's
    roll and crop; None when most of it falls off the screen or off the photo."""
    mask = raw * screen
    if mask.sum() < MIN_VISIBLE * raw.sum():
        return None
    rotated = np.asarray(_rotate(_to_uint8_gray(mask), angle)) > 127
    moved = rotated[offset : offset + size, offset : offset + size]
    inside = int(moved.sum())
    if inside == 0 or inside < MIN_VISIBLE * int(rotated.sum()):
        return None
    rows, cols = np.flatnonzero(moved.any(axis=1)), np.flatnonzero(moved.any(axis=0))
    x0, x1 = _pad_span(cols[0], cols[-1] + 1, size)
    y0, y1 = _pad_span(rows[0], rows[-1] + 1, size)
    return mask, Box(x0, y0, x1, y1)


def _pad_span(lo: int, hi: int, size: int) -> tuple[float, float]:
    """Widen [lo, hi) symmetrically to MIN_BOX_SIDE, shifted back inside [0, size]."""
    lo_f, hi_f = float(lo), float(hi)
    grow = max(0.0, MIN_BOX_SIDE - (hi_f - lo_f)) / 2
    lo_f, hi_f = lo_f - grow, hi_f + grow
    shift = max(0.0, -lo_f) - max(0.0, hi_f - size)
    return max(0.0, lo_f + shift), min(float(size), hi_f + shift)


def _to_uint8(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _to_uint8_gray(mask: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8), "L")


# ---------------------------------------------------------------------------------------------
# Camera: glare, exposure, blur, sensor noise


def _add_glare(rgb: np.ndarray, rng, screen: Box) -> None:
    """A soft elliptical reflection of a lamp on the glass (screen blend)."""
    side = rgb.shape[0]
    cx, cy = rng.uniform(screen.x0, screen.x1), rng.uniform(screen.y0, screen.y1)
    a, b = rng.uniform(0.12, 0.3) * side, rng.uniform(0.05, 0.12) * side
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
    glow = np.exp(-((u / a) ** 2 + (v / b) ** 2)) * np.float32(rng.uniform(0.25, 0.5))
    rgb += (1.0 - rgb) * glow[..., None]


def _apply_capture(photo: Image.Image, capture: Capture, rng) -> np.ndarray:
    rgb = np.asarray(photo, dtype=np.float32) / 255.0
    rgb *= np.float32(capture.brightness)
    if capture.blur > 0:
        rgb = gaussian_filter(rgb, sigma=(capture.blur, capture.blur, 0), mode="nearest")
    if capture.noise > 0:
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(capture.noise)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
