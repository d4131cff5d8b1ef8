"""Scaffolding: `liveml init DIR --task NAME` writes a new project (git + DVC, conf/, a runnable
task package registered by entry point, tests, Makefile); `liveml new-task NAME` adds a task
to an existing one. See `project.py` and docs/tasks.md."""

from liveml.scaffold.project import ScaffoldError, init_project, new_task

__all__ = ["ScaffoldError", "init_project", "new_task"]
