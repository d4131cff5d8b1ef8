"""Which sweep a run belongs to: a Hydra multirun job, a DVC experiment, a reproduction, or a
cell of `liveml explain` (kind `explain`).

Every run record carries `sweep` = None or {name, kind, job, overrides, experiment}: the name
groups runs (W&B group, `liveml compare --sweep`), the overrides say what the sweep varied.
"""

from __future__ import annotations

import os

from liveml.core.project import Project


def hydra_sweep(project: Project) -> dict | None:
    """The multirun job of the running Hydra app (None in a single run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = project.path(str(hc.sweep.dir)).resolve()
    name = sweep_dir.relative_to(project.root) if sweep_dir.is_relative_to(project.root) else None
    return {
        "name": str(name or sweep_dir),
        "kind": "hydra",
        "job": int(hc.job.num),
        "overrides": dict(_split(o) for o in hc.overrides.task),
        "experiment": None,
    }


def dvc_experiment() -> dict | None:
    """The DVC experiment being run (`dvc exp run`, queued or not), from the variables DVC
    sets for stage commands; its sweep is named after the baseline commit."""
    name = os.environ.get("DVC_EXP_NAME")
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if not (name or baseline):
        return None
    return {
        "name": f"dvc:{(baseline or 'workspace')[:7]}",
        "kind": "dvc",
        "job": None,
        "overrides": {},
        "experiment": name,
    }


def reproduction(run_id: str) -> dict:
    """The group of `liveml reproduce` runs of one original run."""
    return {
        "name": f"reproduce/{run_id}",
        "kind": "reproduce",
        "job": None,
        "overrides": {},
        "experiment": None,
    }


def explain(a: str, b: str, job: int, sides: dict[str, str]) -> dict:
    """One cell of `liveml explain A B`: `sides` says whose code, config and data it has
    ({"code": "A", "config": "B", "data": "A"}); all cells of one pair form one sweep."""
    return {
        "name": f"explain/{a}..{b}",
        "kind": "explain",
        "job": int(job),
        "overrides": {part: str(side) for part, side in sides.items()},
        "experiment": None,
    }


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value
