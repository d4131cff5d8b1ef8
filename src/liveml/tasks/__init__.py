"""Tasks plug into liveml through the entry-point group `liveml.tasks`: one name, one `Task`.

The built-in tasks register in liveml's own pyproject.toml exactly as a user's package does in
theirs; nothing here names a task.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from liveml.core.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from liveml.tasks.base import Task

GROUP = "liveml.tasks"
HOW_TO_REGISTER = (
    "register a task in your package's pyproject.toml under "
    f'[project.entry-points."{GROUP}"] as `<name> = "<package>.<module>:<TaskClass>"`, then '
    "reinstall it (`pip install -e .`); `liveml new-task NAME` writes one for you"
)


@cache
def installed() -> dict[str, EntryPoint]:
    """The registered tasks by name (entry points are read once per process)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def task_names() -> list[str]:
    return sorted(installed())


@cache
def get_task(name: str) -> Task:
    """The Task of `name`, loaded from its entry point (a Task subclass or instance)."""
    from liveml.tasks.base import Task

    found = installed()
    if name not in found:
        raise ConfigError(
            f"`task.name` is {name!r}, which no installed package registers; installed tasks: "
            f"{', '.join(sorted(found)) or 'none'}. Fix: pick one with `task=<name>`, or "
            f"{HOW_TO_REGISTER}."
        )
    obj = found[name].load()
    task = obj() if isinstance(obj, type) else obj
    if not isinstance(task, Task):
        raise ConfigError(
            f"entry point {name!r} ({found[name].value}) gives {type(task).__name__}, not a "
            "liveml.tasks.base.Task subclass; fix: point it at your Task class."
        )
    if task.name != name:
        raise ConfigError(
            f"entry point {name!r} loads a task named {task.name!r}; fix: register it under "
            f"the name its class declares ({task.name!r})."
        )
    return task
