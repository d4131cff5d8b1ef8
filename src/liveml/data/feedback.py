"""Feedback data: labelled production inputs, one DVC-tracked folder per version under
`paths.feedback`, merged into the training split by the generate stage.

A version is immutable once added (`dvc add`); a new drift episode adds a new version. Each holds
the task's own dataset layout (splits `train` and `test`: the test split is held out to judge a
retrained model on the drifted data) and `provenance.json` (which drift report, which captures,
which label source). Everything here works on any task through its layout (`Task.read_split`,
`Task.write_split`); a task adds only its labels (`ground_truth`), its score (`quality`) and,
when it needs them, its own hold-out and merge rules (`must_hold_out`, `feedback_rejects`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from liveml.tasks.base import Task

PROVENANCE = "provenance.json"
MERGED = "feedback.json"  # what `merge` appended to a dataset, per version
VERSION_SPLITS = ("train", "test")  # what a feedback version holds
DATA_SPLITS = ("train", "val", "test")  # what a task's generator writes
# A version's name becomes part of file names in the merged data: a plain name, no "/" or "..".
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    from liveml.tasks import get_task

    return merge(get_task(cfg.task.name), data_dir, found)


# --- labelling and versions ------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def in_holdout(sha256: str, holdout: float) -> bool:
    """Whether the input with this hash belongs to the test split: its hash read as a number
    in [0, 1) is below `holdout`. A pure function of the bytes, so adding inputs to a version
    never moves an earlier one to the other split."""
    return int(sha256[:16], 16) / 16**16 < holdout


def label(inputs: list[Path], truth: dict[str, dict], holdout: float):
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
            f"none of the {len(inputs)} inputs has a label ({len(truth)} known inputs); fix: "
            "build the truth with the task's ground_truth() over the dataset folders the "
            "traffic was sent from."
        )
    return labelled, unlabelled, duplicates


def write_version(
    task: Task,
    inputs: list[Path],
    truth: dict[str, dict],
    out_dir: Path,
    *,
    holdout: float = 0.3,
    provenance: dict | None = None,
) -> dict:
    """Write the labelled `inputs` as a dataset in the task's layout (splits train/test) at
    `out_dir`, atomically.

    Bytes are copied unchanged; the test split is the `holdout` share chosen by `in_holdout`,
    plus every input the task says must be held out (`Task.must_hold_out`, counted by its
    reason). Inputs without a label are skipped and counted, as are repeats of the same bytes.
    Labels keep their records and gain "sha256". `provenance` (e.g. the capture records and
    drift report) goes to provenance.json, which `merge` lists. Returns the counts
    {"train", "test", "unlabelled", "duplicates", <reason>..., "inputs"}.
    """
    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.tasks.base import Example

    labelled, unlabelled, duplicates = label(inputs, truth, holdout)
    splits: dict[str, list] = {split: [] for split in VERSION_SPLITS}
    reasons: dict[str, int] = {}
    for sha in sorted(labelled):  # by hash: the same inputs give the same folder in any order
        path, record = labelled[sha]
        why = _reason(task.must_hold_out(record), "must_hold_out")
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
        split = "test" if why is not None or in_holdout(sha, holdout) else "train"
        splits[split].append(Example(path, {**record, "sha256": sha}))
    with atomic_dir(out_dir) as tmp:
        for split, examples in splits.items():
            task.write_split(tmp, split, examples)
        if provenance is not None:
            atomic_write_json(tmp / PROVENANCE, provenance)
    return {
        "train": len(splits["train"]),
        "test": len(splits["test"]),
        "unlabelled": unlabelled,
        "duplicates": duplicates,
        **reasons,
        "inputs": len(inputs),
    }


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


# --- merge into generated data ---------------------------------------------------------------


def merge(task: Task, data_dir: Path, versions: list[Path]) -> dict:
    """Append every version's train split to the train split of the dataset at `data_dir`,
    in place, through the task's layout.

    Appended inputs are stored as `fb-<version>-<i>` (their labels gain "sha256" and
    "feedback": the version). Skipped and counted per version: bytes already in the data (any
    split: a copy of a val/test input in train is split leakage) and whatever the task rejects
    (`Task.feedback_rejects`, by reason). Every version is read and checked before anything is
    written. Writes data_dir/feedback.json ([{version, train, skipped, provenance}]).
    `versions == []` changes nothing. Returns {"train": appended, "versions": those entries}.
    """
    from liveml.core.atomic import atomic_write_json
    from liveml.tasks.base import Example

    data_dir = Path(data_dir)
    if not versions:
        return {"train": 0, "versions": []}
    names = [version_name(v, versions) for v in versions]
    loaded = []
    for name, version in zip(names, map(Path, versions), strict=True):
        if not version.is_dir():
            raise FileNotFoundError(
                f"feedback version {version} does not exist; fix: pass folders written by "
                "liveml.data.feedback.write_version."
            )
        examples = task.read_split(version, "train")
        rejects = task.feedback_rejects(data_dir, examples)
        if len(rejects) != len(examples):
            raise ValueError(
                f"task {task.name!r}: feedback_rejects gave {len(rejects)} answers for "
                f"{len(examples)} examples of {version}; fix: return one per example."
            )
        loaded.append((name, examples, rejects, _read_json(version / PROVENANCE)))
    base = task.read_split(data_dir, "train")
    seen = {sha256_file(e.input) for split in DATA_SPLITS for e in task.read_split(data_dir, split)}
    merged, entries = list(base), []
    for name, examples, rejects, provenance in loaded:
        skipped = {"duplicate": 0}
        appended = 0
        for example, why in zip(examples, rejects, strict=True):
            sha = sha256_file(example.input)
            why = _reason(why, "feedback_rejects")
            if sha in seen:
                skipped["duplicate"] += 1
            elif why is not None:
                skipped[why] = skipped.get(why, 0) + 1
            else:
                seen.add(sha)
                merged.append(
                    Example(
                        example.input,
                        {**example.label, "sha256": sha, "feedback": name},
                        stem=f"fb-{name}-{appended:05d}",
                    )
                )
                appended += 1
        entries.append(
            {"version": name, "train": appended, "skipped": skipped, "provenance": provenance}
        )
    task.write_split(data_dir, "train", merged)
    atomic_write_json(data_dir / MERGED, entries)
    return {"train": sum(e["train"] for e in entries), "versions": entries}


def merged_train(data_dir: Path) -> int:
    """Train inputs `merge` appended to the data at `data_dir` (0 without feedback.json): what
    a validation that counts the recipe's n_train must add."""
    entries = _read_json(Path(data_dir) / MERGED)
    return sum(int(e["train"]) for e in entries) if isinstance(entries, list) else 0


# --- scores ----------------------------------------------------------------------------------


def score(task: Task, cfg: Any, module: Any, data_dir: Path, split: str = "test") -> dict:
    """The task's headline metric of `module` on one split of a dataset folder (the pipeline's
    data or a feedback version): {"metric", "value", "higher_is_better", "n"}, as retraining
    compares champion and challenger. `value` is None when the split holds nothing to score."""
    n = len(task.read_split(Path(data_dir), split))
    if not n:
        raise ValueError(
            f"split {split!r} of {data_dir} holds no inputs, so there is nothing to score; fix: "
            "label more inputs or use a larger holdout."
        )
    value = task.quality(cfg, module, Path(data_dir), split)
    return {
        "metric": task.headline.metric,
        "value": None if value is None else float(value),
        "higher_is_better": task.headline.higher_is_better,
        "n": n,
    }


_COUNTS = ("train", "test", "unlabelled", "duplicates", "duplicate", "inputs")


def _reason(why: Any, hook: str) -> str | None:
    if why is None:
        return None
    if not isinstance(why, str) or not why or why in _COUNTS:
        raise ValueError(
            f"{hook} gave {why!r}; fix: return None or a short reason such as 'size' (not one "
            f"of {', '.join(_COUNTS)}, which the counts use already)."
        )
    return why


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None
