"""Stage validate: check the data, write the data report, fail naming bad files.

Training depends on the report, so corrupt or missing files never reach it.
"""

from __future__ import annotations

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.core.atomic import atomic_write_json
    from liveml.core.progress import Progress
    from liveml.tasks import get_task
    from liveml.tasks.base import DataValidationError

    project, cfg = stage_config()
    with Progress(f"validate {cfg.task.name}"):
        report = get_task(cfg.task.name).validate(cfg, project.path(cfg.paths.data))
    report_path = project.path(cfg.paths.data_report)
    atomic_write_json(report_path, report)
    if report["problems"]:
        raise DataValidationError([tuple(p) for p in report["problems"]], str(report_path))
    print(f"validate: data OK ({report_path})")


if __name__ == "__main__":
    run_stage(main)
