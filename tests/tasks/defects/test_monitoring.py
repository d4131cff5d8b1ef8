"""The defects task's monitoring hooks: photo features, the detector's view, drifted draws
(through the framework's draw loop, as the reference stage and the benches draw)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from liveml.core.config import compose
from liveml.core.project import Project
from liveml.monitoring.monitor import draw_inputs as framework_draw_inputs
from liveml.serving.runtime import Runtime
from liveml.tasks import get_task
from liveml.tasks.defects import monitoring
from liveml.tasks.defects.serving import DefectsPredictor
from liveml.tasks.defects.synth import PNG_COMPRESS_LEVEL, as_recipe, image_rng, render_photo

REPO = Path(__file__).resolve().parents[3]
CLASSES = ["scratch", "crack", "spot"]
N = 30  # photos per condition: enough for a mean over scratch lengths, paired by scene


def task_cfg(*overrides: str):
    """The full-size recipe of conf/ (160 px photos): the feature thresholds are set for it."""
    cfg = compose(["task=defects", *overrides], project=Project(REPO))
    assert list(cfg.task.classes) == CLASSES
    return cfg


def draw_inputs(cfg, n: int, **kw) -> list[bytes]:
    return framework_draw_inputs(get_task("defects"), cfg, n, **kw)


def features(inputs: list[bytes]) -> dict[str, np.ndarray]:
    rows = [monitoring.input_features(data) for data in inputs]
    return {k: np.array([r[k] for r in rows]) for k in monitoring.FEATURES}


@pytest.fixture(scope="module")
def base() -> list[bytes]:
    return draw_inputs(task_cfg(), N, stream=0)


@pytest.fixture(scope="module")
def base_features(base) -> dict[str, np.ndarray]:
    return features(base)


def test_features_of_generated_photos_are_finite_and_in_range(base, base_features):
    assert list(monitoring.input_features(base[0])) == list(monitoring.FEATURES)
    for name, values in base_features.items():
        assert values.shape == (N,) and np.isfinite(values).all(), name
    f = base_features
    assert ((f["brightness"] > 0) & (f["brightness"] < 1)).all()
    assert (f["contrast"] > 0).all() and (f["sharpness"] > 0).all()
    # Camera noise of the recipe: 0.02 per channel -> 0.02 * |LUMA| = 0.0134 on luma.
    assert np.median(f["noise"]) == pytest.approx(0.02 * np.linalg.norm(monitoring.LUMA), rel=0.1)
    assert ((f["defect_area"] >= 0) & (f["defect_area"] < 0.2)).all()
    assert ((f["defect_extent"] >= 0) & (f["defect_extent"] <= math.sqrt(2))).all()
    assert np.mean(f["defect_extent"] > 0.1) > 0.8  # nearly every photo shows a defect


def test_darker_photos_have_lower_brightness(base_features):
    darker = features(draw_inputs(task_cfg(), 10, stream=0, scenario="darker", strength=0.3))
    ratio = darker["brightness"] / base_features["brightness"][:10]
    # The same scenes, 30% less light (a little less where bright pixels were clipped).
    assert ratio == pytest.approx(np.full(10, 0.7), abs=0.03)


def test_longer_scratches_give_larger_defect_extent(base_features):
    longer = features(
        draw_inputs(task_cfg(), N, stream=0, scenario="longer_scratches", strength=1.0)
    )
    assert longer["defect_extent"].mean() > 1.15 * base_features["defect_extent"].mean()
    assert np.mean(longer["defect_extent"] >= base_features["defect_extent"]) > 0.8


def test_blur_lowers_sharpness(base_features):
    blurred = features(draw_inputs(task_cfg(), 10, stream=0, scenario="blur", strength=1.0))
    assert np.median(blurred["sharpness"] / base_features["sharpness"][:10]) < 0.6


def test_jpeg_upload_gives_the_same_features_as_png(base):
    rgb = np.asarray(Image.open(io.BytesIO(base[0])))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    png, jpeg = monitoring.input_features(base[0]), monitoring.input_features(buffer.getvalue())
    assert jpeg["brightness"] == pytest.approx(png["brightness"], abs=0.01)
    assert jpeg["contrast"] == pytest.approx(png["contrast"], abs=0.01)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a" + b"\x00" * 40],
)
def test_undecodable_bytes_raise_value_error_with_a_fix(data):
    with pytest.raises(ValueError, match="fix"):
        monitoring.input_features(data)


def test_truncated_png_raises_value_error(base):
    with pytest.raises(ValueError, match=r"ends early.*fix"):
        monitoring.input_features(base[0][: len(base[0]) // 2])


def test_median_background_is_scipys_median():
    rng = np.random.default_rng(0)
    for shape in [(150, 41), (37, 53), (3, 5)]:  # more rows than a band; fewer than the window
        luma = rng.random(shape)
        expected = ndimage.median_filter(luma.astype(np.float32), size=9, mode="nearest")
        np.testing.assert_array_equal(monitoring.median_background(luma), expected)


# ---------------------------------------------------------------------------------------------
# Draws and recipes


def test_draw_inputs_is_deterministic_and_streams_differ(base):
    cfg = task_cfg()
    assert draw_inputs(cfg, 3, stream=0) == base[:3]
    other = draw_inputs(cfg, 3, stream=1)
    assert all(a != b for a, b in zip(base[:3], other, strict=True))
    # Never a photo of the generator's own splits (split indices 0, 1, 2), same seed and index.
    recipe = as_recipe(cfg.data)
    for split_index in range(3):
        photo, _, _ = render_photo(recipe, CLASSES, image_rng(0, split_index, 0), 0)
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        assert buffer.getvalue() != base[0]
    image = Image.open(io.BytesIO(base[0]))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (160, 160))


def test_draw_inputs_follows_the_data_seed(base):
    cfg = task_cfg("data.seed=1")
    assert draw_inputs(cfg, 1, stream=0) != base[:1]
    with pytest.raises(ValueError, match="stream"):
        draw_inputs(cfg, 1, stream=-1)


def test_drifted_recipe_applies_each_scenario():
    data = task_cfg().data
    recipe = as_recipe(data)
    assert monitoring.drifted_recipe(data, None, 0.0) == recipe
    assert monitoring.drifted_recipe(data, "darker", 0.0) == recipe
    darker = monitoring.drifted_recipe(data, "darker", 0.3)
    assert darker.brightness == pytest.approx(0.7 * recipe.brightness)
    longer = monitoring.drifted_recipe(data, "longer_scratches", 0.5)
    assert longer.scratch_length == pytest.approx(1.5 * recipe.scratch_length)
    blurred = monitoring.drifted_recipe(data, "blur", 0.5)
    assert blurred.blur == pytest.approx(recipe.blur + 1.5)
    assert blurred.brightness == recipe.brightness  # one condition at a time


@pytest.mark.parametrize(
    ("scenario", "strength", "message"),
    [
        ("brighter", 0.3, "darker.*longer_scratches.*blur"),
        ("darker", 1.0, "below 1"),
        ("blur", -0.5, ">= 0"),
        ("blur", math.nan, ">= 0"),
        (None, 0.5, "without a scenario"),
    ],
)
def test_drifted_recipe_rejects_bad_requests(scenario, strength, message):
    cfg = task_cfg()
    with pytest.raises(ValueError, match=message):
        monitoring.drifted_recipe(cfg.data, scenario, strength)
    with pytest.raises(ValueError, match=message):  # the framework's draws check the same
        draw_inputs(cfg, 1, stream=0, scenario=scenario, strength=strength)


# ---------------------------------------------------------------------------------------------
# The model's view


def tiny_detector(score_thresh: float):
    """An untrained tiny detector at 64 px (uploads are 160 px: the server path resizes)."""
    torch.set_num_threads(1)
    cfg = task_cfg(
        "data.image_size=64",
        "model.channels=[8,16,16,32]",
        "model.fpn_channels=32",
        f"model.score_thresh={score_thresh}",
    )
    return get_task("defects").module(cfg).eval()


@pytest.fixture(scope="module")
def tiny_module():
    # score_thresh=0: random weights still give detections to compare with the server's.
    return tiny_detector(0.0)


def eager_predictor(module) -> DefectsPredictor:
    """The server's DefectsPredictor over the eager deployable instead of an exported file."""
    deployable = get_task("defects").deployable(module)
    size = int(module.cfg.data.image_size)

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            return tuple(t.numpy() for t in deployable(torch.from_numpy(x)))

    card = {"signature": {"inputs": [{"shape": ["N", 3, size, size]}]}, "classes": CLASSES}
    runtime = Runtime("defects", card, "torch", Path("eager"), "", forward)
    return DefectsPredictor(runtime, {"max_pixels": 1 << 24})


def test_model_view_shapes_and_ranges(tiny_module, base):
    view = monitoring.model_view(tiny_module, base[:6], batch_size=4)
    assert view["embedding"].dtype == np.float32
    assert view["embedding"].shape == (6, 4 * 32)  # 4 FPN levels of 32 channels, pooled
    assert np.isfinite(view["embedding"]).all()
    assert view["confidence"].dtype == np.float64 and view["confidence"].shape == (6,)
    assert ((view["confidence"] > 0) & (view["confidence"] <= 1)).all()
    assert set(view["predicted_class"]) <= set(CLASSES)
    empty = monitoring.model_view(tiny_module, [])
    assert empty["embedding"].shape == (0, 128) and len(empty["confidence"]) == 0


def test_model_view_agrees_with_the_server(tiny_module, base):
    inputs = base[:6]
    view = monitoring.model_view(tiny_module, inputs, batch_size=4)
    predictor = eager_predictor(tiny_module)
    answers = predictor.run([predictor.decode(data, "image/png") for data in inputs])
    for i, answer in enumerate(answers):
        top = answer["detections"][0]  # the server sorts by score
        assert view["predicted_class"][i] == top["label"]
        assert view["confidence"][i] == pytest.approx(top["score"], abs=1e-4)
    one_by_one = monitoring.model_view(tiny_module, inputs, batch_size=1)
    np.testing.assert_allclose(one_by_one["embedding"], view["embedding"], rtol=1e-4, atol=1e-5)


def test_model_view_without_detections_says_none(base):
    view = monitoring.model_view(tiny_detector(1.0), base[:2])
    assert view["predicted_class"] == ["none", "none"]
    assert view["confidence"].tolist() == [0.0, 0.0]
