"""Stage evaluate: quality on the test split (the task's `evaluate`) and the speed of its
deployable (the framework's `task_speed`), each metric against the task's targets.

Two files, for two readers: `paths.metrics` holds the headline numbers (`headline`), the few
columns `dvc metrics show/diff` and `dvc exp show` list per task; `<paths.plots>/evaluation.json`
holds every metric (per class, per condition, speed per batch size, the scope check), which the
model card keeps, next to the task's plot data.
"""

from __future__ import annotations

from typing import Any

from liveml.stages import EVALUATION, run_stage, stage_config


def headline(task: Any, cfg: Any, metrics: dict) -> dict:
    """The metrics DVC lists: the task's headline metric, its `dvc_metrics`, the metrics its
    `task.targets` name and `meets_scope`, where they are top-level numbers (in `metrics`'
    order, keys unchanged)."""
    keys = {task.headline.metric, *task.dvc_metrics, *cfg.task.targets, "meets_scope"}
    return {k: v for k, v in metrics.items() if k in keys and isinstance(v, int | float | bool)}


def main() -> None:
    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.core.progress import Progress
    from liveml.release.scope import check_scope
    from liveml.release.speed import task_speed
    from liveml.tasks import get_task
    from liveml.training.run import load_trained

    project, cfg = stage_config()
    task = get_task(cfg.task.name)
    module, _ = load_trained(project.path(cfg.paths.model))
    data = project.path(cfg.paths.data)
    with atomic_dir(project.path(cfg.paths.plots)) as plots:
        with Progress(f"evaluate {cfg.task.name}") as progress:
            progress.update(0, "quality on the test split")
            metrics = task.evaluate(cfg, module, data, plots)
            progress.update(1, "speed of the deployable")
            metrics = {**metrics, **task_speed(task, cfg, module, data)}
        scope = check_scope(metrics, cfg.task.targets, task=cfg.task.name)
        metrics = {**metrics, "meets_scope": scope["meets_scope"], "scope": scope["targets"]}
        atomic_write_json(plots / EVALUATION, metrics)
    atomic_write_json(project.path(cfg.paths.metrics), headline(task, cfg, metrics))
    verdict = "meets" if scope["meets_scope"] else "does NOT meet"
    shown = ", ".join(f"{k}={v['value']}" for k, v in scope["targets"].items())
    print(f"evaluate {cfg.task.name}: {shown}; the model {verdict} its scope")


if __name__ == "__main__":
    run_stage(main)
