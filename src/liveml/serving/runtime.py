"""An exported model, loaded for serving: its file checked against the model card, then run in
PyTorch (the TorchScript archive) or ONNX Runtime.

Loading never unpickles Python objects: TorchScript archives hold TorchScript code and tensors,
ONNX files a graph. The bytes are hashed and loaded from the same buffer, so the file that runs
is the file whose hash matched the card.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liveml.serving.config import RUNTIMES

# Which export of the model card each runtime runs.
EXPORT_FORMAT = {"torch": "torchscript", "onnx": "onnx"}
CARD = "model_card.json"


class ModelLoadError(RuntimeError):
    """An exported model cannot be served; the message names the file and the fix."""


@dataclass
class Runtime:
    """One loaded model: `forward(x)` runs a float32 batch and returns numpy outputs."""

    task: str
    card: dict
    runtime: str
    file: Path
    sha256: str
    forward: Callable[[np.ndarray], tuple[np.ndarray, ...]] = field(repr=False)
    # The batch size the graph was exported with, when it is fixed (traced ONNX detectors).
    fixed_batch: int | None = None

    @property
    def identity(self) -> dict:
        """What answered a request: the card's name and lineage keys, runtime and file hash."""
        lineage = self.card.get("lineage", {})
        return {
            "name": self.card.get("name"),
            "task": self.task,
            "run_id": lineage.get("run_id"),
            "fingerprint": lineage.get("fingerprint"),
            "commit": (lineage.get("code") or {}).get("commit"),
            "runtime": self.runtime,
            "file": self.file.name,
            "sha256": self.sha256,
        }

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """Outputs of a batch; a graph with a fixed batch size runs it in slices."""
        if self.fixed_batch is None or batch.shape[0] == self.fixed_batch:
            return self.forward(batch)
        raise ValueError(
            f"{self.file.name} takes batches of {self.fixed_batch}, got {batch.shape[0]}; "
            "split the batch (Predictor.run does)"
        )


def read_card(export_dir: str | Path) -> dict:
    """The model card of an export folder (ModelLoadError naming the fix when missing)."""
    path = Path(export_dir) / CARD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(
            f"no model card at {path}; fix: export the model first (`make repro`, or "
            "`dvc repro <task>_export`) or pass --model TASK=EXPORT_DIR of an exported model"
        ) from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e}); fix: re-run the export") from e


def verified_bytes(export_dir: str | Path, runtime: str) -> tuple[dict, dict, bytes]:
    """(card, export entry, file bytes) after checking the file's SHA-256 against the card."""
    if runtime not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    export_dir = Path(export_dir)
    card = read_card(export_dir)
    fmt = EXPORT_FORMAT[runtime]
    entry = next((e for e in card.get("exports", []) if e.get("format") == fmt), None)
    if entry is None:
        raise ModelLoadError(
            f"the model card in {export_dir} lists no {fmt} export for runtime {runtime!r}; "
            f"fix: choose --runtime {' or '.join(r for r in RUNTIMES if r != runtime)}, "
            "or re-export"
        )
    path = export_dir / entry["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path} is missing; fix: `dvc checkout` or re-export the model"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise ModelLoadError(
            f"{path} has SHA-256 {digest[:12]}…, its model card says "
            f"{str(entry.get('sha256'))[:12]}…: the file is not the one the card describes; "
            "fix: restore it (`dvc checkout`) or re-export (`dvc repro <task>_export`)"
        )
    return card, entry, data


def load_runtime(export_dir: str | Path, runtime: str = "torch") -> Runtime:
    """Load the export folder's model for `runtime` after checking it against its card."""
    card, entry, data = verified_bytes(export_dir, runtime)
    path = Path(export_dir) / entry["file"]
    loader = _load_torchscript if runtime == "torch" else _load_onnx
    try:
        forward, fixed = loader(data, entry)
    except Exception as e:
        raise ModelLoadError(f"cannot load {path} with {runtime}: {e}") from e
    return Runtime(
        task=card["task"],
        card=card,
        runtime=runtime,
        file=path,
        sha256=entry["sha256"],
        forward=forward,
        fixed_batch=fixed,
    )


def _load_torchscript(data: bytes, entry: dict):
    import torch
    import torchvision  # noqa: F401  registers torchvision::nms, which scripted detectors call

    # TorchScript is deprecated for torch.export, which cannot capture detection
    # post-processing yet (see liveml.release.export); scripted FCOS warns on each call about its
    # (losses, detections) return, which the deployable wrapper handles.
    warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", r".*returns a \(Losses, Detections\) tuple", UserWarning)
    module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.numpy() for o in out)

    return forward, None


def _load_onnx(data: bytes, entry: dict):
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(None, {name: x}))

    return forward, batch if isinstance(batch, int) else None
