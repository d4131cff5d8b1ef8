"""Export a model to TorchScript and ONNX, each checked against the eager model before it lands.

A file is written atomically and only after the *reloaded* file reproduced the eager outputs on
the example and on a second input; loading for that check never unpickles Python objects
(TorchScript archive via `torch.jit.load`, ONNX via onnxruntime).

What is exported is the task's `deployable` (tensors in, a tuple of tensors out); the task's
`signature` names its inputs and outputs, and its `export_options` say which ONNX axes stay free
and how two output tuples compare (e.g. detections whose order may differ).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from liveml.core.atomic import atomic_path

if TYPE_CHECKING:
    from liveml.tasks.base import Task

ONNX_OPSET = 17
TORCHSCRIPT = "model.ts"
ONNX = "model.onnx"

Compare = Callable[[tuple[Tensor, ...], tuple[Tensor, ...], str], float]
CheckInfo = Callable[[list[tuple[Tensor, ...]]], dict]


class ExportError(RuntimeError):
    """An export failed or its file does not reproduce the eager model; the message says why."""


def export_task(task: Task, module: Any, inputs: Sequence[Tensor], out_dir: Path) -> list[dict]:
    """Both exports of the task's deployable into `out_dir` (model.ts, model.onnx), checked on
    `inputs` (real test inputs, batch of 1: the first is the example); returns their infos."""
    net = task.deployable(module)
    example, checks = inputs[0], list(inputs[1:])
    signature = task.signature(example)
    options = dict(task.export_options(example) or {})
    dynamic_axes = options.get("dynamic_axes")
    if dynamic_axes is None:  # default: a free batch axis on every input and output
        names = [s["name"] for s in [*signature["inputs"], *signature["outputs"]]]
        dynamic_axes = {name: {0: "N"} for name in names}
    common = {
        "check_inputs": checks,
        "signature": signature,
        "compare": options.get("compare"),
        "check_info": options.get("check_info"),
    }
    return [
        export_torchscript(net, example, Path(out_dir) / TORCHSCRIPT, **common),
        export_onnx(net, example, Path(out_dir) / ONNX, dynamic_axes=dynamic_axes, **common),
    ]


def export_torchscript(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    check_inputs: Sequence[Tensor] | None = None,
    atol: float = 1e-3,
    signature: dict | None = None,
    compare: Compare | None = None,
    check_info: CheckInfo | None = None,
) -> dict:
    """Script `model` (scripting keeps data-dependent post-processing such as detection's),
    save it, reload the archive and check it against the eager model (with `compare`, default
    element-wise). Batch size stays free. `signature` names inputs and outputs in the info
    (default: dtypes and shapes of the example's tensors)."""
    model = model.eval()
    inputs = _check_inputs(example, check_inputs)
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        # torch 2.10+ deprecates TorchScript in favour of torch.export, which cannot capture
        # detection post-processing yet (see export_onnx); scripted torchvision detectors warn
        # on every call that they return (losses, detections), which their deployables handle.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*returns a \(Losses, Detections\) tuple", UserWarning)
        try:
            scripted = torch.jit.script(model)
        except Exception as e:
            raise ExportError(f"TorchScript: torch.jit.script failed: {e}") from e
        # Saved through a buffer: a path would name the archive's root folder after the temp
        # file (`.model.ts.<pid>-<random>`), so two exports of one model would differ in bytes.
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        tmp.write_bytes(buffer.getvalue())
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        diff, refs = _check(model, lambda x: loaded(x), inputs, atol, "TorchScript", compare)
        info = _info("torchscript", path, tmp, diff, model, example, signature)
        if check_info is not None:
            info.update(check_info(refs))
    return info


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    check_inputs: Sequence[Tensor] | None = None,
    atol: float = 1e-3,
    opset: int = ONNX_OPSET,
    signature: dict | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    compare: Compare | None = None,
    check_info: CheckInfo | None = None,
) -> dict:
    """Export to ONNX with the TorchScript-based exporter and check it in onnxruntime.

    Why not the default dynamo exporter: `torch.export` cannot trace data-dependent control
    flow such as torchvision's detection post-processing (batched_nms branches on the box
    count). The TorchScript-based exporter traces: every axis is fixed to the example's except
    those in `dynamic_axes` ({name: {axis: label}}, e.g. {"waveforms": {0: "N", 1: "S"}}),
    and data-dependent sizes (a detector's K) stay dynamic. Input and output names come from
    `signature` (default: "input", unnamed outputs).
    """
    import onnxruntime as ort

    model = model.eval()
    if signature is not None:
        input_names = [s["name"] for s in signature["inputs"]]
        output_names = [s["name"] for s in signature["outputs"]]
    else:
        input_names, output_names = ["input"], None
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
                    output_names=output_names,
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
        diff, refs = _check(model, run, fitting, atol, "ONNX", compare)
        fixed = _fixed_batch(signature, dynamic_axes or {}, int(example.shape[0]))
        info = _info("onnx", path, tmp, diff, model, example, fixed)
        if check_info is not None:
            info.update(check_info(refs))
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


def _check(model: nn.Module, run, inputs: list[Tensor], atol: float, fmt: str, compare=None):
    """(max abs difference between eager and exported outputs over `inputs`, the eager
    outputs); raise when off."""
    compare = compare or _compare_tensors
    worst, refs = 0.0, []
    for i, x in enumerate(inputs):
        with torch.inference_mode():
            ref = _outputs(model(x))
            got = _outputs(run(x))
        diff = compare(ref, got, f"{fmt} on check input {i}")
        if diff > atol:
            raise ExportError(
                f"{fmt} on check input {i}: outputs differ from the eager model by {diff:.3g} "
                f"(> atol {atol:g}); the exported file is not written."
            )
        worst = max(worst, diff)
        refs.append(ref)
    return worst, refs


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


def _spec(t: Tensor) -> dict:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _fixed_batch(signature: dict | None, dynamic_axes: dict, batch: int) -> dict | None:
    """The signature of a traced graph: a batch axis (the first input's leading symbol) that
    `dynamic_axes` leaves fixed becomes the example's batch size."""
    if signature is None or not signature.get("inputs"):
        return signature
    symbol = signature["inputs"][0]["shape"][0]
    if not isinstance(symbol, str):
        return signature

    def fix(spec: dict) -> dict:
        shape = list(spec["shape"])
        if shape and shape[0] == symbol and 0 not in dynamic_axes.get(spec["name"], {}):
            return {**spec, "shape": [batch, *shape[1:]]}
        return spec

    return {
        k: [fix(s) for s in v] if k in ("inputs", "outputs") else v for k, v in signature.items()
    }


def _info(fmt, path, tmp, diff, model, example, signature) -> dict:
    if signature is None:
        with torch.inference_mode():
            outs = _outputs(model(example))
        signature = {"inputs": [_spec(example)], "outputs": [_spec(o) for o in outs]}
    return {
        "format": fmt,
        "file": str(path),
        "sha256": sha256_file(tmp),
        "bytes": Path(tmp).stat().st_size,
        "max_abs_diff": diff,
        "inputs": signature["inputs"],
        "outputs": signature["outputs"],
    }
