"""Exports in general: TorchScript and ONNX of any deployable, checked against the eager model,
and `export_task` driven by a task's signature and export options. (The detector's own exports
are tested with its task: tests/tasks/defects/test_export.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from liveml.release.export import ExportError, export_onnx, export_task, export_torchscript
from liveml.tasks.base import Headline, Task

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:DeprecationWarning"),
]


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


class Scaler(Task):
    """A task whose deployable doubles a [N, F] batch: enough to drive `export_task`."""

    name = "scaler"
    model_schema = dict
    data_schema = dict
    headline = Headline("error", higher_is_better=False)
    suffixes = ("npy",)
    media_types = frozenset({"application/octet-stream"})

    def __init__(self, options: dict | None = None):
        self.options = options or {}

    def deployable(self, module):
        return module

    def signature(self, example):
        return {
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 5], "meaning": "x"}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["N", 5], "meaning": "2x"}],
        }

    def export_options(self, example):
        return self.options

    generate = validate = read_split = write_split = datamodule = module = None  # type: ignore
    evaluate = export_inputs = intended_use = predictor = None  # type: ignore


class Double(nn.Module):
    def forward(self, x):
        return 2 * x


def test_export_task_frees_the_batch_axis_by_default(tmp_path):
    task = Scaler()
    inputs = [torch.rand(1, 5), torch.rand(1, 5)]
    ts, onnx = export_task(task, Double(), inputs, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.ts", "model.onnx"}
    assert ts["inputs"][0]["name"] == "x" and ts["inputs"][0]["shape"] == ["N", 5]
    assert onnx["inputs"][0]["shape"] == ["N", 5]  # free in the graph too
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    batch = torch.rand(4, 5).numpy()
    assert (session.run(None, {"x": batch})[0] == 2 * batch).all()


def test_export_task_uses_the_tasks_options(tmp_path):
    seen = []

    def compare(ref, got, where):
        seen.append(where)
        return float((ref[0] - got[0]).abs().max())

    task = Scaler(
        {
            "dynamic_axes": {},  # a fixed graph: the example's batch
            "compare": compare,
            "check_info": lambda refs: {"checked": len(refs)},
        }
    )
    ts, onnx = export_task(task, Double(), [torch.rand(1, 5), torch.rand(1, 5)], tmp_path)
    assert onnx["inputs"][0]["shape"] == [1, 5] and onnx["outputs"][0]["shape"] == [1, 5]
    assert ts["inputs"][0]["shape"] == ["N", 5]  # TorchScript keeps the batch free
    assert ts["checked"] == onnx["checked"] == 2
    assert seen == [f"{fmt} on check input {i}" for fmt in ("TorchScript", "ONNX") for i in (0, 1)]
