"""The task contract: everything a task gives the framework, declared in one place.

A task is the code part of a model. The framework (stages, tracking, serving, monitoring,
retraining) calls a task only through this class; a task never needs a framework edit. Methods
marked *optional* have a default that raises `MissingTaskPart` naming the method, so a task
without, say, drift scenarios still trains, exports and serves, and is told exactly what to add
when a feature needs it. Methods import their heavy modules lazily: `liveml --help` must stay
instant however many tasks are installed.

Tasks register through the Python entry-point group `liveml.tasks` (see `docs/tasks.md`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from liveml.serving.predictors import Predictor
    from liveml.serving.runtime import Runtime


class DataValidationError(RuntimeError):
    """Data failed a check; `problems` lists (file, what is wrong) to fix or drop."""

    def __init__(self, problems: list[tuple[str, str]], report_path: str | None = None):
        self.problems = problems
        shown = "\n".join(f"  - {f}: {why}" for f, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        where = f" (full report: {report_path})" if report_path else ""
        super().__init__(
            f"data validation failed for {len(problems)} file(s){where}:\n{shown}{more}\n"
            "Fix: regenerate the data (`dvc repro -f generate`) or remove/repair the named files."
        )


class MissingTaskPart(NotImplementedError):
    """A feature needs an optional part the task does not provide; names the method to add."""

    def __init__(self, task: str, method: str, needed_for: str):
        super().__init__(
            f"task {task!r} does not implement `{method}`, which {needed_for} needs; fix: "
            f"define `{method}` on the task class (see docs/tasks.md, 'The contract')."
        )
        self.task, self.method = task, method


@dataclass(frozen=True)
class Headline:
    """The one quality metric that judges a model of the task (champion vs challenger,
    the compare report's default, `liveml explain`): its key in the evaluate metrics."""

    metric: str
    higher_is_better: bool


@dataclass
class Example:
    """One labelled input of a dataset split: the input file and its label record (JSON-able,
    the task's own shape). The unit of the on-disk layout that feedback versions share."""

    input: Path
    label: dict = field(default_factory=dict)


class Task(ABC):
    """One ML task. Subclass it, set the class attributes, implement the abstract methods."""

    # --- identity and config ------------------------------------------------------------
    name: ClassVar[str]  # the registry name, `task.name` in conf/task/<name>.yaml
    model_schema: ClassVar[type]  # dataclass: the keys of conf/model/<name>.yaml
    data_schema: ClassVar[type]  # dataclass: the keys of conf/data/<name>.yaml (the recipe)
    headline: ClassVar[Headline]
    # Input files the model takes (monitoring reads folders of them, capture names them).
    suffixes: ClassVar[tuple[str, ...]]
    # Upload media types the endpoint accepts (`/v1/<name>`).
    media_types: ClassVar[frozenset[str]]

    # --- data: generate, validate, on-disk layout ----------------------------------------
    @abstractmethod
    def generate(self, cfg: Any, out_dir: Path) -> dict:
        """Write the dataset (splits train, val, test) into `out_dir`; return a small summary.
        Deterministic in `cfg.data` (the recipe): same recipe, same bytes."""

    @abstractmethod
    def validate(self, cfg: Any, data_dir: Path) -> dict:
        """Check the dataset; return the report. `report["problems"]` lists [file, what is wrong]
        pairs; the validate stage writes the report, then fails naming them if any."""

    @abstractmethod
    def read_split(self, data_dir: Path, split: str) -> list[Example]:
        """The examples of one split of the layout, in their stored order."""

    @abstractmethod
    def write_split(self, data_dir: Path, split: str, examples: list[Example]) -> None:
        """Write `examples` as split `split` of a dataset folder in the task's layout: copy
        each input file in and store its label. Used for feedback versions and their merge."""

    # --- training ------------------------------------------------------------------------
    @abstractmethod
    def datamodule(self, cfg: Any, data_dir: Path):
        """The LightningDataModule over `data_dir`."""

    @abstractmethod
    def module(self, cfg: Any):
        """A fresh LightningModule (the training loop lives there)."""

    # --- release: evaluate, export, model card -------------------------------------------
    @abstractmethod
    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        """Quality metrics on the test split (the headline metric among them); may write DVC
        plot data into `plots_dir`. Speed is measured by the framework on `deployable`."""

    @abstractmethod
    def deployable(self, module: Any):
        """The trained network as an `nn.Module` with a flat tensor signature (tensors in,
        a tuple of tensors out) that TorchScript, ONNX and the server use."""

    @abstractmethod
    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        """`n` real test inputs (batch of 1 each, tensors) to check exports against the eager
        model and to measure speed."""

    @abstractmethod
    def signature(self, example: Any) -> dict:
        """The deployable's input/output signature ({"inputs": [...], "outputs": [...]}, each
        {name, dtype, shape, meaning}) for the model card and the server."""

    @abstractmethod
    def intended_use(self, cfg: Any) -> str:
        """What the model is for, in a sentence, for its model card."""

    def export_options(self, example: Any) -> dict:
        """Export settings of the deployable: {"dynamic_axes": {...}} for ONNX (default: a
        free batch axis on every input and output)."""
        return {}

    # --- serving -------------------------------------------------------------------------
    @abstractmethod
    def predictor(self, runtime: Runtime, limits: dict) -> Predictor:
        """The endpoint logic over a loaded export: how request bytes become model input and
        model outputs become a JSON answer (subclass `liveml.serving.predictors.Predictor`)."""

    # --- monitoring (optional) -----------------------------------------------------------
    def input_features(self, data: bytes) -> dict[str, float | str]:
        """Per-input features of raw input bytes (numbers or categories) for drift tests."""
        raise MissingTaskPart(self.name, "input_features", "drift monitoring")

    def model_view(self, module: Any, inputs: list[bytes]) -> dict[str, np.ndarray]:
        """What the model makes of `inputs`: {"confidence": [N], "predicted_class": [N],
        "embedding": [N, D] or None}, the way the server would see those bytes."""
        raise MissingTaskPart(self.name, "model_view", "drift monitoring")

    def draw_input(self, rng: np.random.Generator, recipe: Any) -> bytes:
        """One fresh input of `recipe` (a data config) as the bytes a client would send, drawn
        from `rng` only. The framework owns the loop and the seeds (`monitoring.reference`)."""
        raise MissingTaskPart(self.name, "draw_input", "the drift reference")

    # Drifted recipes: scenario name -> what it changes, in words.
    scenarios: ClassVar[dict[str, str]] = {}

    def drifted_recipe(self, recipe: Any, scenario: str, strength: float) -> Any:
        """`recipe` drifted by `scenario` at `strength` (> 0), for benches and drift tests."""
        raise MissingTaskPart(self.name, "drifted_recipe", "drift scenarios")

    # --- feedback: labels for production inputs (optional) ---------------------------------
    def ground_truth(self, source_dirs: list[Path]) -> dict[str, dict]:
        """{sha256 of input bytes: label record} for every input of the datasets under
        `source_dirs`: how captured production inputs get their labels."""
        raise MissingTaskPart(self.name, "ground_truth", "`liveml monitor --retrain`")

    def quality(self, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float:
        """The headline metric of `module` on one split of a dataset folder."""
        raise MissingTaskPart(self.name, "quality", "`liveml monitor --retrain`")
