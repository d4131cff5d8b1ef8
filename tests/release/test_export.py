"""TorchScript and ONNX exports of a small detector reproduce the eager model's detections."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from torch import nn

from liveml.release.export import (
    DeployableDetector,
    ExportError,
    _compare_detections,
    export_onnx,
    export_torchscript,
    sha256_file,
)
from liveml.tasks.defects.config import FcosConfig
from liveml.tasks.defects.model import build_detector

SIZE = 64

# The tests load and call TorchScript on purpose: torch 2.10+ flags torch.jit as deprecated and
# scripted FCOS warns that it returns (losses, detections), which DeployableDetector handles.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:FCOS always returns:UserWarning"),
]


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    # A low score threshold: a fresh detector's scores are ~0.07, and the check must compare
    # real detections, not two empty lists.
    cfg = FcosConfig(channels=[8, 16, 16, 32], fpn_channels=32, head_convs=1, score_thresh=0.05)
    return build_detector(cfg, num_classes=3, image_size=SIZE).eval()


@pytest.fixture(scope="module")
def example():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def exported(detector, example, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    ts = export_torchscript(detector, example, out / "model.ts")
    onnx = export_onnx(detector, example, out / "model.onnx")
    return out, ts, onnx


def eager(detector, x):
    with torch.inference_mode():
        return DeployableDetector(detector).eval()(x)


def test_torchscript(detector, exported):
    out, info, _ = exported
    assert info["format"] == "torchscript" and info["sha256"] == sha256_file(out / "model.ts")
    assert info["max_abs_diff"] <= 1e-3 and all(n > 0 for n in info["check_detections"])
    assert info["inputs"][0]["shape"] == ["N", 3, SIZE, SIZE]
    assert [o["name"] for o in info["outputs"]] == ["boxes", "scores", "labels", "image_index"]
    assert zipfile.is_zipfile(out / "model.ts")  # a TorchScript archive: code + tensors
    loaded = torch.jit.load(str(out / "model.ts"))
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # free batch
    with torch.inference_mode():
        got = loaded(x)
    ref = eager(detector, x)
    assert set(ref[3].tolist()) == {0, 1, 2}
    assert _compare_detections(ref, got, "test") <= 1e-3


def test_onnx(detector, exported):
    import onnx
    import onnxruntime as ort

    out, _, info = exported
    assert info["format"] == "onnx" and info["sha256"] == sha256_file(out / "model.onnx")
    assert info["max_abs_diff"] <= 1e-3 and all(n > 0 for n in info["check_detections"])
    assert info["inputs"][0]["shape"] == [1, 3, SIZE, SIZE]  # traced: batch fixed at 1
    onnx.checker.check_model(str(out / "model.onnx"))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "image_index"]
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    got = tuple(torch.from_numpy(a) for a in session.run(None, {"images": x.numpy()}))
    assert _compare_detections(eager(detector, x), got, "test") <= 1e-3
    json.dumps(info)  # the info goes into the model card as is


def test_detections_compare_regardless_of_tie_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
    ref = (boxes, torch.tensor([0.5, 0.5]), torch.tensor([1, 2]), torch.tensor([0, 0]))
    swapped = tuple(t.flip(0) for t in ref)
    assert _compare_detections(ref, swapped, "x") == 0.0
    wrong_label = (ref[0], ref[1], torch.tensor([1, 3]), ref[3])
    with pytest.raises(ExportError, match="labels"):
        _compare_detections(ref, wrong_label, "x")
    with pytest.raises(ExportError, match="1 detections"):
        _compare_detections(ref, tuple(t[:1] for t in ref), "x")


def test_plain_module_exports_with_its_signature(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = torch.rand(2, 3, 8, 8)
    info = export_torchscript(model, x, tmp_path / "m.ts")
    assert info["inputs"] == [{"dtype": "float32", "shape": [2, 3, 8, 8]}]
    assert info["outputs"] == [{"dtype": "float32", "shape": [2, 4, 6, 6]}]
    assert export_onnx(model, x, tmp_path / "m.onnx")["max_abs_diff"] <= 1e-5


class Unscriptable(nn.Module):
    def forward(self, x, **kwargs):  # TorchScript rejects **kwargs
        return x


def test_failed_export_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match=r"torch\.jit\.script failed"):
        export_torchscript(Unscriptable(), torch.rand(1, 3), tmp_path / "m.ts")
    assert list(tmp_path.iterdir()) == []
