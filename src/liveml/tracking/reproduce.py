"""Reproduce a recorded run: same data (checked by hash), same config, fresh training, compare.

The run is retrained into a temp folder with temp checkpoints (never resuming the original's),
and reported as reproduced when the weights hash and the final metrics are equal.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

from liveml.core.project import Project


class DataMismatchError(RuntimeError):
    """The data on disk is not the data the run was trained on."""


def check_data(record: dict, project: Project) -> None:
    """Raise DataMismatchError naming each path whose current DVC hash differs from the record."""
    from liveml.tracking.lineage import data_hashes, is_commit

    # Only a commit hash goes into a command the user may paste (never a record's raw value).
    commit = (record.get("code") or {}).get("commit")
    commit = commit if is_commit(commit) else "<the run's commit>"
    fix = f"fix: `git checkout {commit} && dvc checkout` (or `dvc pull`) to restore that data."
    problems = []
    for path, recorded in (record.get("data") or {}).items():
        try:
            current = data_hashes(project.root, [path])[path]
        except FileNotFoundError:
            current = "<missing>"
        if current != recorded:
            problems.append(f"{path}: recorded {recorded}, current {current}")
    if problems:
        raise DataMismatchError(
            f"run {record.get('run_id')} was trained on other data: {'; '.join(problems)}; {fix}"
        )


def code_warnings(record: dict, project: Project) -> list[str]:
    """How the current code differs from the run's (commit, uncommitted changes)."""
    from liveml.tracking.lineage import code_state, commit_problem, pipeline_outputs

    then = record.get("code") or {}
    now = code_state(project.root, exclude=pipeline_outputs(record["config"], project))
    out = []
    if problem := commit_problem(then.get("commit")):
        out.append(f"the run's {problem}: its code cannot be checked out")
    elif then.get("commit") != now["commit"]:
        out.append(
            f"code commit differs: run {then.get('commit')}, now {now['commit']} "
            f"(`git checkout {then.get('commit')}` to use the run's code)"
        )
    from liveml.core import numerics

    recorded = (record.get("environment") or {}).get("numerics")
    if diffs := numerics.differences(recorded, numerics.describe()):
        out.append(
            "CPU numerics differ from the run's, so the weights may differ in the last bits "
            f"({'; '.join(diffs)}); fix: run with the run's settings (docs/architecture.md)"
        )
    if then.get("diff_sha256") != now["diff_sha256"]:
        out.append(
            "uncommitted changes differ from the run's "
            f"(run dirty={then.get('dirty')}, now dirty={now['dirty']})"
        )
    return out


def reproduce(ref: str | os.PathLike, project: Project | None = None, *, tol: float = 0.0) -> dict:
    """Retrain the run `ref` names (run id, prefix, model folder or run.json) and compare.

    Returns {"run_id", "weights_match", "metrics_match", "original", "reproduced",
    "metric_diffs", "warnings"}. Metrics match when every key is present in both and differs
    by at most `tol` (default: exactly equal, as deterministic CPU training gives).
    """
    from liveml.tracking.runs import BadRecordError, RunStore, read_record
    from liveml.tracking.sweeps import reproduction
    from liveml.training.run import train

    project = project or Project.find()
    path = RunStore.for_project(project).resolve(ref)
    record = read_record(path)
    if not isinstance(record.get("config"), dict) or not isinstance(record.get("data"), dict):
        raise BadRecordError(
            f"{path}: no config or data to retrain from (not a training run's record)"
        )
    check_data(record, project)
    warnings = code_warnings(record, project)
    for w in warnings:
        print(f"liveml: warning: {w}", file=sys.stderr, flush=True)

    cfg = copy.deepcopy(record["config"])
    with tempfile.TemporaryDirectory(prefix="liveml-reproduce-") as tmp:
        # Temp checkpoints: a reproduction must train from scratch, not resume the original.
        cfg["paths"]["checkpoints"] = str(Path(tmp) / "checkpoints")
        cfg["paths"]["runs"] = str(Path(tmp) / "runs")
        new = train(
            cfg,
            out_dir=Path(tmp) / "model",
            project=project,
            resume=False,
            sweep=reproduction(record["run_id"]),
        )

    a, b = record.get("metrics") or {}, new.get("metrics") or {}
    diffs = {
        k: (a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if k not in a or k not in b or abs(float(a[k]) - float(b[k])) > tol
    }
    keys = ("run_id", "fingerprint", "weights_sha256", "metrics", "code", "environment")
    return {
        "run_id": record["run_id"],
        "weights_match": record.get("weights_sha256") == new["weights_sha256"],
        "metrics_match": not diffs,
        "original": {k: record.get(k) for k in keys},
        "reproduced": {k: new.get(k) for k in keys},
        "metric_diffs": diffs,
        "warnings": warnings,
    }
