"""Feedback data: labelled production inputs, one DVC-tracked folder per version under
`paths.feedback`, merged into the training split by the generate stage.

A version is immutable once added (`dvc add`); a new drift episode adds a new version. Each holds
the task's own dataset layout (splits `train` and `test`: the test split is held out to judge a
retrained model on the drifted data) and `provenance.json` (which drift report, which captures,
which label source).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

PROVENANCE = "provenance.json"


def task_feedback(task: str) -> ModuleType:
    """The task's feedback code: ground truth, versions in its layout, merge, quality."""
    return importlib.import_module(f"liveml.tasks.{task}.feedback")


def versions(feedback_dir: Path) -> list[Path]:
    """The version folders under `feedback_dir`, oldest first (names start with a UTC stamp)."""
    feedback_dir = Path(feedback_dir)
    if not feedback_dir.is_dir():
        return []
    return sorted(p for p in feedback_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def merge_into(cfg: Any, project: Any, data_dir: Path) -> dict | None:
    """Append every feedback version's train split to the freshly generated `data_dir`."""
    found = versions(project.path(cfg.paths.feedback))
    if not found:
        return None  # the data stays byte-identical to the recipe's
    return task_feedback(cfg.task.name).merge(data_dir, found)
