"""Stage evaluate: quality and speed on the test split, each metric against the task's targets."""

from __future__ import annotations

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.release.scope import check_scope
    from liveml.tasks import get_task
    from liveml.training.run import load_trained

    project, cfg = stage_config()
    module, _ = load_trained(project.path(cfg.paths.model))
    with atomic_dir(project.path(cfg.paths.plots)) as plots:
        metrics = get_task(cfg.task.name).evaluate(cfg, module, project.path(cfg.paths.data), plots)
    scope = check_scope(metrics, cfg.task.targets, task=cfg.task.name)
    metrics = {**metrics, "meets_scope": scope["meets_scope"], "scope": scope["targets"]}
    atomic_write_json(project.path(cfg.paths.metrics), metrics)
    verdict = "meets" if scope["meets_scope"] else "does NOT meet"
    shown = ", ".join(f"{k}={v['value']}" for k, v in scope["targets"].items())
    print(f"evaluate {cfg.task.name}: {shown}; the model {verdict} its scope")


if __name__ == "__main__":
    run_stage(main)
