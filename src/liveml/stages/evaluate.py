"""Stage evaluate: quality on the test split (the task's `evaluate`) and the speed of its
deployable (the framework's `task_speed`), each metric against the task's targets."""

from __future__ import annotations

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.release.scope import check_scope
    from liveml.release.speed import task_speed
    from liveml.tasks import get_task
    from liveml.training.run import load_trained

    project, cfg = stage_config()
    task = get_task(cfg.task.name)
    module, _ = load_trained(project.path(cfg.paths.model))
    data = project.path(cfg.paths.data)
    with atomic_dir(project.path(cfg.paths.plots)) as plots:
        metrics = task.evaluate(cfg, module, data, plots)
    metrics = {**metrics, **task_speed(task, cfg, module, data)}
    scope = check_scope(metrics, cfg.task.targets, task=cfg.task.name)
    metrics = {**metrics, "meets_scope": scope["meets_scope"], "scope": scope["targets"]}
    atomic_write_json(project.path(cfg.paths.metrics), metrics)
    verdict = "meets" if scope["meets_scope"] else "does NOT meet"
    shown = ", ".join(f"{k}={v['value']}" for k, v in scope["targets"].items())
    print(f"evaluate {cfg.task.name}: {shown}; the model {verdict} its scope")


if __name__ == "__main__":
    run_stage(main)
