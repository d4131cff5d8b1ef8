"""Stage generate: write the task's dataset (all splits) from its data recipe, plus the labelled
feedback versions (production inputs after drift) appended to the training split."""

from __future__ import annotations

import json

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.core.atomic import atomic_dir
    from liveml.data.feedback import merge_into
    from liveml.tasks import get_task

    project, cfg = stage_config()
    with atomic_dir(project.path(cfg.paths.data)) as tmp:
        summary = get_task(cfg.task.name).generate(cfg, tmp)
        feedback = merge_into(cfg, project, tmp)
    print(json.dumps({**summary, "feedback": feedback}, indent=2))


if __name__ == "__main__":
    run_stage(main)
