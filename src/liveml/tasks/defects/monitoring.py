"""What the drift monitor needs from the defects task: features of an uploaded photo, the
detector's own view of a batch of photos, drifted recipes and fresh photos from the generator
(the framework's `liveml.monitoring.monitor.draw_inputs` owns the loop and the seeds).

Features are cheap image statistics on luma in [0, 1], computed on the photo as uploaded (the
monitor watches what clients send). The model view runs the server's preprocessing (decode,
resize to the model's size, scale to 0..1) through the eager detector, so its confidence and
class agree with what the server answers for the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np

from liveml.tasks.defects import SCENARIOS

FEATURES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "sharpness",
    "noise",
    "defect_area",
    "defect_extent",
)
NO_DETECTION = "none"  # predicted_class of a photo without any detection

# The server refuses bigger uploads by its own limit; here any photo it took must decode.
MAX_PIXELS = 1 << 28
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as PIL's convert("L")
# Background window: wider than the widest defect stroke (~2 px) and dead-pixel blob (<= 7 px
# across), so the median shows the screen under a defect, not the defect.
BACKGROUND_SIZE = 9
# A defect differs from the screen under it by >= 0.3 in luma at >= 55% opacity (synth); after
# blur and anti-aliasing a hairline keeps roughly 0.1. Camera noise (luma sigma ~0.013) crosses
# 0.08 with probability ~1e-9 per pixel, so the mask holds defects, not noise.
DEFECT_DELTA = 0.08
# Immerkaer's noise kernel: cancels flat, sloped and edge-free curved regions; its L2 norm is
# 6, so residual / 6 has the noise's own sigma.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
_NOISE_GAIN = 6.0


# ---------------------------------------------------------------------------------------------
# Features of one uploaded photo


def decode_rgb(data: bytes) -> np.ndarray:
    """Uploaded JPEG/PNG bytes -> HxWx3 uint8 RGB, decoded exactly as the server does; a file
    the server would refuse is a ValueError that names the problem and the fix."""
    from liveml.serving.inputs import InputError, decode_image

    try:
        return decode_image(data, max_pixels=MAX_PIXELS)
    except InputError as e:
        raise ValueError(f"cannot decode the photo: {e.message}") from e


def input_features(data: bytes) -> dict[str, float]:
    """Image statistics of one uploaded photo, keyed by FEATURES (all on luma in [0, 1])."""
    from scipy import ndimage
    from scipy.stats import median_abs_deviation

    luma = decode_rgb(data).astype(np.float64) @ LUMA / 255.0
    side = max(luma.shape)
    residual = ndimage.convolve(luma, _NOISE_KERNEL, mode="reflect")[1:-1, 1:-1]
    background = median_background(luma)
    # Along a sharp edge (screen, bezel, UI card) the median snaps to one side while the
    # anti-aliased edge pixels sit between: where the background itself steps, nothing counts.
    steps = ndimage.maximum_filter(background, 3) - ndimage.minimum_filter(background, 3)
    mask = (np.abs(luma - background) > DEFECT_DELTA) & (steps < DEFECT_DELTA)
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "sharpness": float(ndimage.laplace(luma, mode="reflect").var()),
        # MAD, not std: edges and defects are sparse outliers of the residual; scale="normal"
        # divides by 0.6745 so Gaussian noise gives its sigma.
        "noise": float(
            median_abs_deviation(residual, axis=None, scale="normal") / _NOISE_GAIN
            if residual.size
            else 0.0
        ),
        "defect_area": float(mask.mean()),
        "defect_extent": _largest_extent(mask) / side,
    }


def median_background(luma: np.ndarray) -> np.ndarray:
    """The BACKGROUND_SIZE-square median of `luma` (edges repeated), as
    `scipy.ndimage.median_filter(luma, BACKGROUND_SIZE, mode="nearest")` in float32.

    A partial sort over strided windows is ~4x faster than ndimage's per-pixel selection at
    this window size; bands of rows bound the window copy (~80 MB for a 4000 px wide photo).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    k, half = BACKGROUND_SIZE, BACKGROUND_SIZE // 2
    padded = np.pad(luma.astype(np.float32), half, mode="edge")
    out = np.empty(luma.shape, np.float32)
    band = 64
    for top in range(0, luma.shape[0], band):
        rows = padded[top : top + min(band, luma.shape[0] - top) + 2 * half]
        windows = sliding_window_view(rows, (k, k)).reshape(-1, luma.shape[1], k * k)
        out[top : top + len(windows)] = np.partition(windows, k * k // 2, axis=-1)[..., k * k // 2]
    return out


def _largest_extent(mask: np.ndarray) -> float:
    """Bounding-box diagonal (px) of the largest 8-connected component of `mask` (0 if none).
    8-connectivity keeps an anti-aliased diagonal scratch in one piece."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    rows, cols = ndimage.find_objects(labels)[int(sizes.argmax())]
    return math.hypot(rows.stop - rows.start, cols.stop - cols.start)


# ---------------------------------------------------------------------------------------------
# The model's view


def model_view(module: Any, inputs: list[bytes], *, batch_size: int = 32) -> dict:
    """The detector's view of uploaded photos: {"embedding": float32 (n, d) with each FPN level
    globally average-pooled and concatenated, "confidence": float64 (n,) top detection score
    (0.0 without detections), "predicted_class": label of the top detection or "none"}.

    `module` is an eval-mode DefectsModule (`liveml.training.run.load_trained(...)[0]`).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; fix: pass a batch size of 1 or more")
    classes = list(module.cfg.task.classes)
    size = int(module.cfg.data.image_size)
    detector = module.model
    pooled: list[torch.Tensor] = []

    def keep_fpn(_module, _inputs, features) -> None:
        # Global average pool of every pyramid level: one vector per image, whatever its size.
        pooled.append(torch.cat([f.mean(dim=(2, 3)) for f in features.values()], dim=1))

    embeddings, confidence, predicted = [], [], []
    hook = detector.backbone.register_forward_hook(keep_fpn)
    try:
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                batch = [
                    torch.from_numpy(server_tensor(data, size)).to(module.device)
                    for data in inputs[start : start + batch_size]
                ]
                pooled.clear()
                detections = detector(batch)
                embeddings.append(pooled[0].float().cpu().numpy())
                for d in detections:
                    scores = d["scores"]
                    if len(scores) == 0:
                        confidence.append(0.0)
                        predicted.append(NO_DETECTION)
                        continue
                    top = int(scores.argmax())
                    confidence.append(float(scores[top]))
                    predicted.append(classes[int(d["labels"][top]) - 1])
    finally:
        hook.remove()
    width = len(detector.backbone.fpn.layer_blocks) * int(detector.backbone.out_channels)
    return {
        "embedding": (
            np.concatenate(embeddings).astype(np.float32)
            if embeddings
            else np.zeros((0, width), np.float32)
        ),
        "confidence": np.asarray(confidence, dtype=np.float64),
        "predicted_class": predicted,
    }


def server_tensor(data: bytes, size: int) -> np.ndarray:
    """float32 [3, size, size] in 0..1: the server's preparation of one upload
    (`serving.DefectsPredictor.decode`), so the monitor sees what the served model sees."""
    from PIL import Image

    rgb = decode_rgb(data)
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# Fresh and drifted photos


def drifted_recipe(data_cfg: Any, scenario: str | None, strength: float):
    """The recipe (a checked `DefectsDataConfig`, as `synth.render_photo` takes it) with
    `scenario` applied at `strength` (0 = unchanged)."""
    from liveml.tasks.defects.synth import as_recipe

    recipe = as_recipe(data_cfg)
    strength = _check_strength(scenario, strength)
    if scenario is None or strength == 0:
        return recipe
    if scenario == "darker":
        return dataclasses.replace(recipe, brightness=recipe.brightness * (1 - strength))
    if scenario == "longer_scratches":
        return dataclasses.replace(recipe, scratch_length=recipe.scratch_length * (1 + strength))
    return dataclasses.replace(recipe, blur=recipe.blur + 3 * strength)  # "blur"


def _check_strength(scenario: str | None, strength: float) -> float:
    from liveml.monitoring.monitor import check_scenario

    strength = check_scenario(SCENARIOS, scenario, strength)
    if scenario == "darker" and strength >= 1:
        raise ValueError(
            f"darker at strength {strength} leaves no light (brightness * (1 - strength) <= 0); "
            "fix: pass a strength below 1"
        )
    return strength


def draw_input(recipe: Any, classes: list[str], rng: np.random.Generator, index: int) -> bytes:
    """Photo `index` of a fresh draw from `recipe` (a data config or a drifted recipe) as PNG
    bytes, as the generator writes them and a client uploads them.

    The framework seeds `rng` per photo from (data.seed, stream, index) with the generator's
    own scheme (`synth.image_rng`, the task's `sample_rng`), so photo i shows the same scene
    under every scenario and strength (only the drifted condition changes, unless a longer
    scratch falls off the screen and shifts the later draws): comparisons are paired.
    """
    from PIL import Image

    from liveml.tasks.defects.config import DefectsDataConfig
    from liveml.tasks.defects.synth import PNG_COMPRESS_LEVEL, as_recipe, render_photo

    if not isinstance(recipe, DefectsDataConfig):
        recipe = as_recipe(recipe)
    photo, _, _ = render_photo(recipe, list(classes), rng, index)
    buffer = io.BytesIO()
    Image.fromarray(photo, "RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
