"""The dataset of a config's data recipe: the pipeline's DVC-tracked data, or one made on demand.

A sweep over the data recipe (`python -m liveml.training -m data.brightness=0.5,1.0`) must train
each job on data made from its own recipe, not on whatever `paths.data` holds. The pipeline's
own recipe (params.yaml at `tasks.<task>`) maps to `paths.data`, which DVC versions; any other
recipe is generated and validated once into `paths.recipes/<key>/`, keyed by the recipe and
the task's code, and reused by every job that asks for it (also by parallel jobs: one waits).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from liveml.core.project import Project


def dataset_for(cfg, project: Project) -> str:
    """The data folder (as a project-relative path, the way run records name it) that holds
    the recipe of `cfg`; generates it first when it is not the pipeline's recipe."""
    pipeline = _pipeline_recipe(project, cfg.task.name)
    mine = recipe_of(cfg)
    if pipeline is None or pipeline == mine:
        return str(cfg.paths.data)
    rel = f"{cfg.paths.recipes}/{recipe_key(cfg)}"
    _ensure(cfg, project.path(rel))
    return rel


def recipe_of(cfg) -> dict:
    """What the generated data depends on in the config: the data group and the classes."""
    from liveml.core.config import to_dict

    data = cfg["data"] if isinstance(cfg, dict) else to_dict(cfg.data)
    classes = cfg["task"]["classes"] if isinstance(cfg, dict) else list(cfg.task.classes)
    return {"data": data, "classes": list(classes)}


def recipe_key(cfg) -> str:
    """16 hex digits of sha256 over the recipe and the source of the task's package (a change
    to the generator must not reuse data it made before)."""
    import inspect

    from liveml.tasks import get_task
    from liveml.tracking.lineage import canonical_json

    h = hashlib.sha256(canonical_json(recipe_of(cfg)))
    package = Path(inspect.getfile(type(get_task(cfg.task.name)))).parent
    for src in sorted(package.glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:16]


def _pipeline_recipe(project: Project, task: str) -> dict | None:
    """The recipe params.yaml builds for `task` (None without params.yaml or that task)."""
    import yaml

    if not project.params_file.is_file():
        return None
    tasks = (yaml.safe_load(project.params_file.read_text()) or {}).get("tasks") or {}
    return recipe_of(tasks[task]) if task in tasks else None


def _ensure(cfg, out: Path) -> None:
    """Generate and validate the recipe into `out` unless a finished copy is there."""
    from liveml.core.atomic import atomic_dir
    from liveml.core.locks import exclusive
    from liveml.tasks import get_task
    from liveml.tasks.base import DataValidationError

    if out.is_dir():
        return
    with exclusive(out.with_name(out.name + ".lock")):  # parallel jobs wait for one maker
        if out.is_dir():  # another job made it while this one waited
            return
        task = get_task(cfg.task.name)
        print(f"liveml: generating the data of this recipe into {out}", flush=True)
        with atomic_dir(out) as tmp:
            task.generate(cfg, tmp)
            report = task.validate(cfg, tmp)
            if report["problems"]:
                raise DataValidationError([tuple(p) for p in report["problems"]], str(out))
