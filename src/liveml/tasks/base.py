"""The seam between the shared pipeline and a task: what differs per task, and nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


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


class Task(ABC):
    """One ML task (code part of the model). Methods import their heavy modules lazily."""

    name: ClassVar[str]
    model_schema: ClassVar[type]
    data_schema: ClassVar[type]

    @abstractmethod
    def generate(self, cfg: Any, out_dir: Path) -> dict:
        """Write the dataset (all splits) into `out_dir`; return a small summary."""

    @abstractmethod
    def validate(self, cfg: Any, data_dir: Path) -> dict:
        """Check the dataset; return the report. `report["problems"]` lists [file, what is wrong]
        pairs; the validate stage writes the report, then fails naming them if any."""

    @abstractmethod
    def datamodule(self, cfg: Any, data_dir: Path):
        """The LightningDataModule over `data_dir`."""

    @abstractmethod
    def module(self, cfg: Any):
        """A fresh LightningModule (the training loop lives there)."""

    @abstractmethod
    def evaluate(self, cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
        """Quality and speed metrics on the test split; writes DVC plot data into `plots_dir`."""

    @abstractmethod
    def deployable(self, module: Any):
        """The trained network behind the flat tensor signature that exports and servers use."""

    @abstractmethod
    def export_inputs(self, cfg: Any, data_dir: Path, n: int = 3) -> list:
        """`n` real test inputs (batch of 1 each) to check exports against the eager model."""

    @abstractmethod
    def signature(self, example: Any) -> dict:
        """The deployable model's input/output signature, in shapes and words."""

    @abstractmethod
    def intended_use(self, cfg: Any) -> str:
        """What the model is for, in a sentence, for its model card."""
