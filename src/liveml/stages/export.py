"""Stage export: deployable TorchScript + ONNX models, checked against the eager model, and the
model card (lineage, signature, every evaluate metric, scope)."""

from __future__ import annotations

import json
from pathlib import Path

from liveml.stages import EVALUATION, run_stage, stage_config

CARD = "model_card.json"


def main() -> None:
    from liveml.core.atomic import atomic_dir
    from liveml.release.export import export_task
    from liveml.release.modelcard import build_card, write_card
    from liveml.tasks import get_task
    from liveml.training.run import load_trained

    project, cfg = stage_config()
    task = get_task(cfg.task.name)
    module, record = load_trained(project.path(cfg.paths.model))
    # Every evaluate metric (paths.metrics holds the headline ones only).
    metrics = json.loads((project.path(cfg.paths.plots) / EVALUATION).read_text())
    inputs = task.export_inputs(cfg, project.path(cfg.paths.data))
    with atomic_dir(project.path(cfg.paths.export)) as out:
        exports = export_task(task, module, inputs, out)
        for info in exports:  # relative to the export folder: `out` is a temp name until done
            info["file"] = Path(info["file"]).name
        card = build_card(
            task=cfg.task.name,
            run_record=record,
            metrics=metrics,
            scope={"meets_scope": metrics["meets_scope"], "targets": metrics["scope"]},
            exports=exports,
            classes=list(cfg.task.classes),
            signature=task.signature(inputs[0]),
            intended_use=task.intended_use(cfg),
        )
        write_card(card, out / CARD)
    print(f"export: {', '.join(e['file'] for e in exports)} + {CARD}")


if __name__ == "__main__":
    run_stage(main)
