"""Feedback data: labelled production inputs, one DVC-tracked folder per version under
`paths.feedback`, merged into the training split by the generate stage.

A version is immutable once added (`dvc add`); a new drift episode adds a new version. Each holds
the task's own dataset layout (splits `train` and `test`: the test split is held out to judge a
retrained model on the drifted data) and `provenance.json` (which drift report, which captures,
which label source).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

PROVENANCE = "provenance.json"
VERSION_SPLITS = ("train", "test")  # what a feedback version holds
# A version's name becomes part of file names in the merged data: a plain name, no "/" or "..".
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


# --- shared by the tasks' feedback modules ---------------------------------------------------


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def in_holdout(sha256: str, holdout: float) -> bool:
    """Whether the input with this hash belongs to the test split: its hash read as a number
    in [0, 1) is below `holdout`. A pure function of the bytes, so adding inputs to a version
    never moves an earlier one to the other split."""
    return int(sha256[:16], 16) / 16**16 < holdout


def label(inputs: list[Path], truth: dict[str, dict], holdout: float, kind: str):
    """({sha256: (path, label record)} of the labelled inputs, unlabelled count, duplicates
    count); ValueError naming the fix when none has a label."""
    if not 0.0 <= holdout <= 1.0:
        raise ValueError(f"holdout must be in [0, 1], got {holdout!r}")
    labelled: dict[str, tuple[Path, dict]] = {}
    unlabelled = duplicates = 0
    for path in map(Path, inputs):
        sha = sha256_file(path)
        if sha in labelled:
            duplicates += 1  # the same input captured twice: once is enough, and no leak
        elif sha in truth:
            labelled[sha] = (path, truth[sha])
        else:
            unlabelled += 1
    if not labelled:
        raise ValueError(
            f"none of the {len(inputs)} inputs has a label ({len(truth)} known {kind}); fix: "
            "build the truth with ground_truth() over the dataset folders the traffic was sent "
            "from."
        )
    return labelled, unlabelled, duplicates


def version_name(version: Path, versions: list[Path]) -> str:
    """The folder name of a version, checked: safe in file names, distinct from the others."""
    name = Path(version).name
    if not VERSION_NAME.fullmatch(name):
        raise ValueError(
            f"feedback version folder name {name!r} cannot go into file names; fix: name it "
            "with letters, digits, '.', '_' or '-' only (e.g. v0003)."
        )
    if sum(Path(v).name == name for v in versions) > 1:
        raise ValueError(
            f"two feedback versions are named {name!r}; their merged files would collide. "
            "Fix: pass each version once, with distinct folder names."
        )
    return name
