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

    from liveml.release.speed import Speed
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
    the task's own shape). The unit of the on-disk layout that feedback versions share.

    `stem` names the stored file without folder and suffix: `read_split` sets it to the file's
    own stem, `write_split` keeps it (None: the task numbers the file, e.g. `train_00007`).
    Top-level label keys the task does not know (the framework adds `sha256`, `source`,
    `feedback`) must survive `write_split` and come back from `read_split`."""

    input: Path
    label: dict = field(default_factory=dict)
    stem: str | None = None


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
        """The examples of one split of the layout, in their stored order (`[]` for an empty
        split); FileNotFoundError naming the split and the fix when it is not there."""

    @abstractmethod
    def write_split(self, data_dir: Path, split: str, examples: list[Example]) -> None:
        """Write `examples` as split `split` of a dataset folder in the task's layout, replacing
        the split's label file: copy each input file in (an input already at its place stays)
        and store its label. Check everything before writing anything (ValueError naming the
        problem). Used for feedback versions and to merge them into generated data."""

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
        """Export settings of the deployable, all optional:
        - "dynamic_axes": {name: {axis: label}}, the free axes of the ONNX graph (default: a
          free batch axis on every input and output of `signature`; {} fixes every axis);
        - "compare": `(eager, exported, where) -> float`, the largest difference between two
          output tuples, raising `liveml.release.export.ExportError` when they disagree (for
          outputs whose order may differ, e.g. detections with tied scores; default: the
          largest element-wise difference of same-shaped tensors);
        - "check_info": `(eager outputs of each check input) -> dict` of facts the export info
          adds (e.g. how many detections were compared)."""
        return {}

    def speed_metrics(self, cfg: Any, speed: Speed) -> dict:
        """The evaluate metrics of the framework's speed measurement of `deployable` on
        `export_inputs` (the evaluate stage adds them to `evaluate`'s). Override to name or
        derive them as `task.targets` expect (e.g. a real-time factor); default:
        `speed.metrics()` (latency_p50_ms, latency_p95_ms, throughput_per_s, ...)."""
        return speed.metrics()

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

    def draw_input(self, rng: np.random.Generator, recipe: Any, *, cfg: Any, index: int) -> bytes:
        """Input `index` of a fresh draw from `recipe` (`cfg.data`, or what `drifted_recipe`
        made of it) as the bytes a client would send, drawn from `rng` only; `cfg` is the run's
        config (for what the recipe does not hold, e.g. task.classes). The framework owns the
        loop, the streams and the seeds (`liveml.monitoring.monitor.draw_inputs`)."""
        raise MissingTaskPart(self.name, "draw_input", "the drift reference")

    def sample_rng(self, seed: int, stream: int, index: int) -> np.random.Generator:
        """The RNG of sample `index` of split (or draw stream) number `stream`, seeded the way
        `generate` seeds its samples (default: `default_rng(mix_seed(seed, stream, index))`).
        Drift draws use streams from 100 on, so they never repeat a dataset sample."""
        import numpy as np

        from liveml.data.sampling import mix_seed

        return np.random.default_rng(mix_seed(int(seed), int(stream), int(index)))

    # Drifted recipes: scenario name -> what it changes, in words.
    scenarios: ClassVar[dict[str, str]] = {}

    def drifted_recipe(self, recipe: Any, scenario: str, strength: float) -> Any:
        """`recipe` drifted by `scenario` at `strength` (> 0), for benches and drift tests."""
        raise MissingTaskPart(self.name, "drifted_recipe", "drift scenarios")

    # --- feedback: labels for production inputs (optional) ---------------------------------
    def ground_truth(self, source_dirs: list[Path]) -> dict[str, dict]:
        """{sha256 of input bytes: label record} for every input of the datasets under
        `source_dirs`: how captured production inputs get their labels. A record is an
        `Example.label` of the layout, plus "source": {"dir", "split", "file", ...}."""
        raise MissingTaskPart(self.name, "ground_truth", "`liveml monitor --retrain`")

    def quality(self, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float | None:
        """The headline metric of `module` on one split of a dataset folder (the pipeline's
        data or a feedback version); None when the split holds nothing to score."""
        raise MissingTaskPart(self.name, "quality", "`liveml monitor --retrain`")

    def must_hold_out(self, label: dict) -> str | None:
        """Why a labelled feedback input must go to its version's test split whatever its
        hash (a short reason, counted by `write_version`), or None (default: none must)."""
        return None

    def feedback_rejects(self, data_dir: Path, examples: list[Example]) -> list[str | None]:
        """For each example of a feedback version about to join the train split of the
        dataset at `data_dir`: None to take it, or why not (a short reason, counted per
        version in the data's feedback.json). Raise ValueError naming the fix when the version
        cannot join at all (e.g. other classes). Default: take every one."""
        return [None] * len(examples)

    # --- DVC views (optional) ----------------------------------------------------------------
    # Evaluate metrics `dvc metrics show` / `dvc exp show` list besides the headline metric,
    # the keys `task.targets` names and `meets_scope` (top-level numbers only). Every metric
    # `evaluate` returns, these or not, is kept in `<plots_dir>/evaluation.json` and the card.
    dvc_metrics: ClassVar[tuple[str, ...]] = ()

    def plots(self, plots_dir: str) -> list[dict]:
        """Top-level `plots:` entries of dvc.yaml for the plot data `evaluate` writes into
        `plots_dir` (a project-relative path), e.g. [{"<plots_dir>/confusion.csv": {
        "template": "confusion", "x": "predicted", "y": "actual", "title": ...}}]: each names its
        files, template, x/y fields (columns the files have) and title. Only the files named
        here are drawn; `dvc plots show` must render each without error (tests check it)."""
        return []
