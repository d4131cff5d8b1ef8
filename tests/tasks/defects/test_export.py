"""The detector's deployable: TorchScript and ONNX exports (through the framework's
`export_task`, as the export stage runs it) reproduce the eager model's detections."""

from __future__ import annotations

import json
import zipfile
from types import SimpleNamespace

import pytest
import torch

from liveml.release.export import ExportError, export_task, sha256_file
from liveml.tasks import get_task
from liveml.tasks.defects.config import FcosConfig
from liveml.tasks.defects.export import DeployableDetector, compare_detections
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
    cfg = FcosConfig(
        name="fcos_tiny",
        channels=[8, 16, 16, 32],
        blocks=[1, 1, 1, 1],
        fpn_channels=32,
        head_convs=1,
        min_positives=4,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=20,
        lr=0.004,
        weight_decay=0.0001,
        warmup_frac=0.1,
        batch_size=8,
    )
    return build_detector(cfg, num_classes=3, image_size=SIZE).eval()


@pytest.fixture(scope="module")
def example():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def exported(detector, example, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    second = torch.rand(example.shape, generator=torch.Generator().manual_seed(1))
    ts, onnx = export_task(
        get_task("defects"), SimpleNamespace(model=detector), [example, second], out
    )
    return out, ts, onnx


def eager(detector, x):
    with torch.inference_mode():
        return DeployableDetector(detector).eval()(x)


def test_torchscript(detector, exported):
    out, info, _ = exported
    assert info["format"] == "torchscript" and info["sha256"] == sha256_file(out / "model.ts")
    assert info["max_abs_diff"] <= 1e-3 and all(n > 0 for n in info["check_detections"])
    assert len(info["check_detections"]) == 2 and "check_warning" not in info
    assert info["inputs"][0]["shape"] == ["N", 3, SIZE, SIZE]
    assert [o["name"] for o in info["outputs"]] == ["boxes", "scores", "labels", "image_index"]
    assert zipfile.is_zipfile(out / "model.ts")  # a TorchScript archive: code + tensors
    loaded = torch.jit.load(str(out / "model.ts"))
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # free batch
    with torch.inference_mode():
        got = loaded(x)
    ref = eager(detector, x)
    assert set(ref[3].tolist()) == {0, 1, 2}
    assert compare_detections(ref, got, "test") <= 1e-3


def test_onnx(detector, exported):
    import onnx
    import onnxruntime as ort

    out, _, info = exported
    assert info["format"] == "onnx" and info["sha256"] == sha256_file(out / "model.onnx")
    assert info["max_abs_diff"] <= 1e-3 and all(n > 0 for n in info["check_detections"])
    assert info["inputs"][0]["shape"] == [1, 3, SIZE, SIZE]  # traced: batch fixed at 1
    assert info["outputs"][0]["shape"] == ["K", 4]  # the detection count stays free
    onnx.checker.check_model(str(out / "model.onnx"))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "image_index"]
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    got = tuple(torch.from_numpy(a) for a in session.run(None, {"images": x.numpy()}))
    assert compare_detections(eager(detector, x), got, "test") <= 1e-3
    json.dumps(info)  # the info goes into the model card as is


def test_detections_compare_regardless_of_tie_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]])
    ref = (boxes, torch.tensor([0.5, 0.5]), torch.tensor([1, 2]), torch.tensor([0, 0]))
    swapped = tuple(t.flip(0) for t in ref)
    assert compare_detections(ref, swapped, "x") == 0.0
    wrong_label = (ref[0], ref[1], torch.tensor([1, 3]), ref[3])
    with pytest.raises(ExportError, match="labels"):
        compare_detections(ref, wrong_label, "x")
    with pytest.raises(ExportError, match="1 detections"):
        compare_detections(ref, tuple(t[:1] for t in ref), "x")


def test_check_without_detections_says_so():
    from liveml.tasks.defects.export import check_info

    none = torch.zeros(0, dtype=torch.int64)
    info = check_info([(torch.zeros(0, 4), torch.zeros(0), none, none)])
    assert info["check_detections"] == [0] and "no detections" in info["check_warning"]
