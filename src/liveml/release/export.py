"""Export a model to TorchScript and ONNX, each checked against the eager model before it lands.

A file is written atomically and only after the *reloaded* file reproduced the eager outputs on
the example and on a second input; loading for that check never unpickles Python objects
(TorchScript archive via `torch.jit.load`, ONNX via onnxruntime).

Detection models (torchvision FCOS, RetinaNet, ...) take a list of images and return a list of
dicts; `DeployableDetector` gives them a tensor-in, tensors-out signature that both formats keep.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from liveml.core.atomic import atomic_path

ONNX_OPSET = 17


class ExportError(RuntimeError):
    """An export failed or its file does not reproduce the eager model; the message says why."""


class DeployableDetector(nn.Module):
    """A torchvision detector behind a flat signature: images [N,3,H,W] float 0..1 in;
    boxes [K,4] xyxy pixels, scores [K], labels [K] (1-based class ids), image_index [K] out,
    the detections of all N images concatenated (image_index says which image each is from)."""

    input_names = ("images",)
    output_names = ("boxes", "scores", "labels", "image_index")

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        imgs = list(images.unbind(0))
        # Scripted torchvision detectors always return (losses, detections); eager ones the list.
        if torch.jit.is_scripting():
            _, dets = self.detector(imgs)
        else:
            dets = self.detector(imgs)
        index = [torch.full_like(d["labels"], i) for i, d in enumerate(dets)]
        return (
            torch.cat([d["boxes"] for d in dets]),
            torch.cat([d["scores"] for d in dets]),
            torch.cat([d["labels"] for d in dets]),
            torch.cat(index),
        )

    @staticmethod
    def signature(example: Tensor, batch: int | str = "N") -> dict:
        """Input/output signature in words and shapes (for the export info and model card)."""
        _, c, h, w = example.shape
        return {
            "inputs": [
                {
                    "name": "images",
                    "dtype": "float32",
                    "shape": [batch, c, h, w],
                    "meaning": "RGB images scaled to 0..1",
                }
            ],
            "outputs": [
                {
                    "name": "boxes",
                    "dtype": "float32",
                    "shape": ["K", 4],
                    "meaning": "x1, y1, x2, y2 in input pixels",
                },
                {"name": "scores", "dtype": "float32", "shape": ["K"], "meaning": "confidence"},
                {
                    "name": "labels",
                    "dtype": "int64",
                    "shape": ["K"],
                    "meaning": "1-based index into task.classes",
                },
                {
                    "name": "image_index",
                    "dtype": "int64",
                    "shape": ["K"],
                    "meaning": "which input image (0..N-1) the detection belongs to",
                },
            ],
        }


def as_deployable(model: nn.Module) -> nn.Module:
    """Wrap a torchvision detection model in `DeployableDetector` (others pass through), in
    eval mode: exports capture inference behaviour."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    if isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform):
        model = DeployableDetector(model)
    return model.eval()


def export_torchscript(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    check_inputs: Sequence[Tensor] | None = None,
    atol: float = 1e-3,
) -> dict:
    """Script `model` (scripting keeps the data-dependent detection post-processing), save it,
    reload the archive and check it against the eager model. Batch size stays free."""
    model = as_deployable(model)
    inputs = _check_inputs(example, check_inputs)
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        # torch 2.10+ deprecates TorchScript in favour of torch.export, which cannot capture
        # detection post-processing yet (see export_onnx); scripted FCOS warns on every call
        # that it returns (losses, detections), which DeployableDetector handles.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*returns a \(Losses, Detections\) tuple", UserWarning)
        try:
            scripted = torch.jit.script(model)
        except Exception as e:
            raise ExportError(f"TorchScript: torch.jit.script failed: {e}") from e
        scripted.save(str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        diff, n_dets = _check(model, lambda x: loaded(x), inputs, atol, "TorchScript")
        info = _info("torchscript", path, tmp, diff, n_dets, model, example, batch="N")
    return info


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    check_inputs: Sequence[Tensor] | None = None,
    atol: float = 1e-3,
    opset: int = ONNX_OPSET,
) -> dict:
    """Export to ONNX with the TorchScript-based exporter and check it in onnxruntime.

    Why not the default dynamo exporter: `torch.export` cannot trace torchvision's detection
    post-processing (batched_nms branches on a data-dependent box count). The TorchScript-based
    exporter traces, so the batch size is fixed to the example's (1 for a latency model); the
    number of detections K stays dynamic.
    """
    import onnxruntime as ort

    model = as_deployable(model)
    input_names = list(getattr(model, "input_names", ("input",)))
    output_names = getattr(model, "output_names", None)
    # A deployable may declare free axes, e.g. {"waveforms": {1: "samples"}} for audio length.
    dynamic_axes = getattr(model, "dynamic_axes", None)
    inputs = _check_inputs(example, check_inputs)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings():
                # The legacy exporter is deprecated and tracing warns about every tensor-to-
                # Python conversion in torchvision's code; the check below is what counts.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=input_names,
                    output_names=list(output_names) if output_names else None,
                    dynamic_axes=dict(dynamic_axes) if dynamic_axes else None,
                )
        except Exception as e:
            raise ExportError(
                f"ONNX: torch.onnx.export (TorchScript-based, opset {opset}) failed: {e}"
            ) from e
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: Tensor) -> tuple[Tensor, ...]:
            return tuple(torch.from_numpy(o) for o in session.run(None, {name: x.numpy()}))

        free = {a for axes in (dynamic_axes or {}).values() for a in axes}
        fitting = [
            x for x in inputs if _fits(x, example, free)
        ]  # other axes are fixed in the graph
        diff, n_dets = _check(model, run, fitting, atol, "ONNX")
        info = _info("onnx", path, tmp, diff, n_dets, model, example, batch=example.shape[0])
        info.update(opset=opset, exporter="torch.onnx.export(dynamo=False)", runtime="onnxruntime")
    return info


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fits(x: Tensor, example: Tensor, free: set[int]) -> bool:
    """Whether `x` has the example's shape on every axis the exported graph fixed."""
    return x.dim() == example.dim() and all(
        a == b or i in free for i, (a, b) in enumerate(zip(x.shape, example.shape, strict=True))
    )


def _check_inputs(example: Tensor, extra: Sequence[Tensor] | None) -> list[Tensor]:
    # A second, different input catches exports that baked the example's values in as constants.
    if extra is None:
        gen = torch.Generator().manual_seed(1)
        extra = [torch.rand(example.shape, generator=gen, dtype=example.dtype)]
    return [example, *extra]


def _outputs(out: Any) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _check(model: nn.Module, run, inputs: list[Tensor], atol: float, fmt: str):
    """Max abs difference between eager and exported outputs over `inputs`; raise when off."""
    worst, n_dets = 0.0, []
    for i, x in enumerate(inputs):
        with torch.inference_mode():
            ref = _outputs(model(x))
            got = _outputs(run(x))
        if isinstance(model, DeployableDetector):
            diff = _compare_detections(ref, got, f"{fmt} on check input {i}")
            n_dets.append(int(ref[0].shape[0]))
        else:
            diff = _compare_tensors(ref, got, f"{fmt} on check input {i}")
        if diff > atol:
            raise ExportError(
                f"{fmt} on check input {i}: outputs differ from the eager model by {diff:.3g} "
                f"(> atol {atol:g}); the exported file is not written."
            )
        worst = max(worst, diff)
    return worst, n_dets


def _compare_tensors(ref: tuple[Tensor, ...], got: tuple[Tensor, ...], where: str) -> float:
    if len(ref) != len(got):
        raise ExportError(f"{where}: {len(got)} outputs, eager model gives {len(ref)}")
    worst = 0.0
    for k, (a, b) in enumerate(zip(ref, got, strict=True)):
        if a.shape != b.shape:
            raise ExportError(
                f"{where}: output {k} has shape {list(b.shape)}, eager {list(a.shape)}"
            )
        if a.is_floating_point():
            if a.numel():
                worst = max(worst, float((a - b.to(a.dtype)).abs().max()))
        elif not torch.equal(a, b.to(a.dtype)):
            raise ExportError(f"{where}: integer output {k} differs from the eager model")
    return worst


def _compare_detections(ref: tuple[Tensor, ...], got: tuple[Tensor, ...], where: str) -> float:
    """Compare detection sets regardless of the order of tied scores: pair each eager detection
    with its closest exported one (same image and label) by optimal assignment."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    boxes, scores, labels, index = ref
    g_boxes, g_scores, g_labels, g_index = (t.to(r.dtype) for t, r in zip(got, ref, strict=True))
    if boxes.shape[0] != g_boxes.shape[0]:
        raise ExportError(
            f"{where}: {g_boxes.shape[0]} detections, eager model gives {boxes.shape[0]}"
        )
    if boxes.shape[0] == 0:
        return 0.0
    cost = torch.maximum(
        torch.cdist(boxes, g_boxes, p=float("inf")),
        (scores[:, None] - g_scores[None, :]).abs(),
    ).numpy()
    same = ((labels[:, None] == g_labels[None, :]) & (index[:, None] == g_index[None, :])).numpy()
    rows, cols = linear_sum_assignment(np.where(same, cost, 1e9))
    if not same[rows, cols].all():
        raise ExportError(f"{where}: labels or image indices differ from the eager model")
    return float(cost[rows, cols].max())


def _spec(t: Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _info(fmt, path, tmp, diff, n_dets, model, example, batch) -> dict:
    if isinstance(model, DeployableDetector):
        signature = model.signature(example, batch=batch)
    elif hasattr(model, "signature"):
        signature = model.signature(example)
    else:
        with torch.inference_mode():
            outs = _outputs(model(example))
        signature = {"inputs": [_spec(example)], "outputs": [_spec(o) for o in outs]}
    info = {
        "format": fmt,
        "file": str(path),
        "sha256": sha256_file(tmp),
        "bytes": Path(tmp).stat().st_size,
        "max_abs_diff": diff,
        "inputs": signature["inputs"],
        "outputs": signature["outputs"],
    }
    if n_dets:
        info["check_detections"] = n_dets  # how many detections each check input compared
        if not any(n_dets):
            info["check_warning"] = (
                "no detections on any check input: only empty outputs were compared; "
                "pass real images as check_inputs"
            )
    return info
