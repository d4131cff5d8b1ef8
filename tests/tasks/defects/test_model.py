"""The FCOS detector: built from config, scriptable, right output format, and it can learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from liveml.tasks.defects.config import FcosConfig
from liveml.tasks.defects.model import build_detector, level_strides

REPO = Path(__file__).resolve().parents[3]


def default_model():
    """The model config of conf/model/fcos_tiny.yaml, typed (the schema gives types only)."""
    return OmegaConf.merge(
        OmegaConf.structured(FcosConfig), OmegaConf.load(REPO / "conf/model/fcos_tiny.yaml")
    )


TINY_MODEL = {"channels": [8, 16, 16, 32], "fpn_channels": 32, "head_convs": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model_cfg(**overrides):
    return OmegaConf.merge(default_model(), TINY_MODEL, overrides)


def images(n: int, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def test_builds_from_config_at_the_data_size():
    cfg = tiny_model_cfg()
    model = build_detector(cfg, num_classes=3, image_size=64)
    # No upscaling to torchvision's default 800 px.
    assert model.transform.min_size == (64,)
    assert model.transform.max_size == 64
    assert level_strides(cfg) == [4, 8, 16, 32]
    assert [s[0] for s in model.anchor_generator.sizes] == [4, 8, 16, 32]
    # Labels are the 1-based COCO category ids: background slot 0 plus 3 classes.
    assert model.head.classification_head.num_classes == 4
    assert model.score_thresh == cfg.score_thresh
    assert model.detections_per_img == cfg.detections_per_img


def test_default_config_builds():
    model = build_detector(default_model(), num_classes=3, image_size=160)
    model.eval()
    with torch.no_grad():
        (out,) = model(images(1, size=160))
    assert set(out) == {"boxes", "scores", "labels"}


def test_eval_output_format_and_torchscript_match_eager():
    torch.manual_seed(0)
    model = build_detector(tiny_model_cfg(score_thresh=0.0), num_classes=3, image_size=64).eval()
    scripted = torch.jit.script(model).eval()
    x = images(2)
    with torch.no_grad():
        eager = model(x)
        with pytest.warns(UserWarning, match="always returns a"):
            _, script_out = scripted(x)
    assert len(eager) == 2
    for det, det_s in zip(eager, script_out, strict=True):
        n = len(det["boxes"])
        assert 0 < n <= model.detections_per_img
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["labels"].dtype == torch.int64 and det["scores"].shape == (n,)
        assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 64).all()
        for k in det:
            torch.testing.assert_close(det[k], det_s[k])


def test_training_loss_is_finite_and_decreases_when_overfitting():
    torch.manual_seed(0)
    model = build_detector(tiny_model_cfg(), num_classes=3, image_size=64).train()
    x = images(2)
    for img in x:  # draw the "defects" so there is something to find
        img[:, 10:22, 18:30] = 1.0
        img[:, 28:52, 38:44] = 0.0
    target = {
        "boxes": torch.tensor([[18.0, 10, 30, 22], [38, 28, 44, 52]]),
        "labels": torch.tensor([3, 1]),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = model(x, [target, target])
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["classification"] < 0.2 * first["classification"]
    assert last["bbox_regression"] < 0.5 * first["bbox_regression"]


def _anchors(model, size: int = 64) -> tuple[torch.Tensor, list[int]]:
    from torchvision.models.detection.image_list import ImageList

    feats = [torch.zeros(1, 1, size // s, size // s) for s in level_strides(tiny_model_cfg())]
    image = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
    return model.anchor_generator(image, feats)[0], [f.shape[-1] ** 2 for f in feats]


def test_tiny_boxes_get_positives_that_plain_fcos_misses():
    # A 3x3 box at a multiple of the stride holds no stride-4 grid point strictly inside.
    box = torch.tensor([[8.0, 8.0, 11.0, 11.0], [20.0, 30.0, 50.0, 40.0]])
    plain = build_detector(tiny_model_cfg(min_positives=0), num_classes=3, image_size=64)
    anchors, per_level = _anchors(plain)
    assert (plain.match(box, anchors, per_level) == 0).sum() == 0
    model = build_detector(tiny_model_cfg(min_positives=4), num_classes=3, image_size=64)
    matched = model.match(box, anchors, per_level)
    assert (matched == 0).sum() == 4
    # The big box keeps exactly plain FCOS's positives.
    assert torch.equal(matched == 1, plain.match(box, anchors, per_level) == 1)
