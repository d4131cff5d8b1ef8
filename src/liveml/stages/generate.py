"""Stage generate: write the task's dataset (all splits) from its data recipe, plus the labelled
feedback versions (production inputs after drift) appended to the training split."""

from __future__ import annotations

import json

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.core.atomic import atomic_dir
    from liveml.core.progress import Progress, count_files
    from liveml.data.feedback import merge_into
    from liveml.tasks import get_task

    project, cfg = stage_config()
    label = f"generate {cfg.task.name}"
    # The generator is one call: its progress is the files it has written so far.
    with (
        atomic_dir(project.path(cfg.paths.data)) as tmp,
        Progress(label, item="files", watch=count_files(tmp)),
    ):
        summary = get_task(cfg.task.name).generate(cfg, tmp)
        feedback = merge_into(cfg, project, tmp)
    print(json.dumps({**summary, "feedback": feedback}, indent=2))


if __name__ == "__main__":
    run_stage(main)
