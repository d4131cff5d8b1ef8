"""Stage evaluate: quality and speed on the test split, each metric against the task's targets."""

from __future__ import annotations

from liveml.stages import run_stage


def main() -> None:
    from liveml.atomic import atomic_dir, atomic_write_json
    from liveml.config import load_params
    from liveml.project import Project
    from liveml.scope import check_scope
    from liveml.tasks import get_task
    from liveml.training import load_trained

    project = Project.find()
    cfg = load_params(project)
    module, _ = load_trained(project.path(cfg.paths.model))
    with atomic_dir(project.path(cfg.paths.plots)) as plots:
        metrics = get_task(cfg.task.name).evaluate(cfg, module, project.path(cfg.paths.data), plots)
    scope = check_scope(metrics, cfg.task.targets, task=cfg.task.name)
    metrics = {**metrics, "meets_scope": scope["meets_scope"], "scope": scope["targets"]}
    atomic_write_json(project.path(cfg.paths.metrics), metrics)
    verdict = "meets" if scope["meets_scope"] else "does NOT meet"
    print(f"evaluate: map_50={metrics['map_50']:.3f}; the model {verdict} its scope")


if __name__ == "__main__":
    run_stage(main)
