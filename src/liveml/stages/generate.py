"""Stage generate: write the task's dataset (all splits) from its data recipe."""

from __future__ import annotations

import json

from liveml.stages import run_stage


def main() -> None:
    from liveml.atomic import atomic_dir
    from liveml.config import load_params
    from liveml.project import Project
    from liveml.tasks import get_task

    project = Project.find()
    cfg = load_params(project)
    with atomic_dir(project.path(cfg.paths.data)) as tmp:
        summary = get_task(cfg.task.name).generate(cfg, tmp)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    run_stage(main)
