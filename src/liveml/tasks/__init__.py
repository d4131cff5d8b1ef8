"""Task registry: each task (defects, later speech) plugs its code into the shared pipeline."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liveml.tasks.base import Task

TASKS = {"defects": "liveml.tasks.defects", "speech": "liveml.tasks.speech"}


def get_task(name: str) -> Task:
    """The Task object of `name`, imported lazily (tasks pull in torch)."""
    if name not in TASKS:
        from liveml.config import ConfigError

        raise ConfigError(
            f"`task.name` is {name!r}; allowed: {', '.join(sorted(TASKS))}. "
            "Fix: pick one with `task=<name>` or add conf/task/<name>.yaml and register it."
        )
    return importlib.import_module(TASKS[name]).TASK
