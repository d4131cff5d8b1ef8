"""DVC stage scripts: one thin module per stage in dvc.yaml, `main()` only wiring.

Each stage runs once per task (`foreach` in dvc.yaml): `python -m liveml.stages.<stage> <task>`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def run_stage(fn: Callable[[], None]) -> None:
    """Run a stage's body; a known user-facing error becomes one clear message and exit 1."""
    from liveml.core.config import ConfigError
    from liveml.tasks.base import DataValidationError

    try:
        fn()
    except (ConfigError, DataValidationError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def stage_config(argv: list[str] | None = None) -> tuple[Any, Any]:
    """(project, checked config of the task named on the command line) from params.yaml."""
    from liveml.core.config import ConfigError, load_params, pipeline_tasks
    from liveml.core.project import Project

    args = sys.argv[1:] if argv is None else argv
    project = Project.find()
    if len(args) != 1:
        known = ", ".join(pipeline_tasks(project))
        raise ConfigError(
            f"a stage takes one argument, the task (one of: {known}); got {args}. "
            "Fix: `python -m liveml.stages.<stage> <task>` (dvc.yaml passes `${key}`)."
        )
    return project, load_params(args[0], project)
