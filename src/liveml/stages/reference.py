"""Stage reference: the reference profile of the trained model's inputs, for drift monitoring.

Runs right after training; versioned with the model (its DVC out next to `paths.model`).
"""

from __future__ import annotations

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.monitoring.monitor import build_reference

    project, cfg = stage_config()
    meta = build_reference(cfg, project)
    timing = meta["timing"]
    print(
        f"reference {cfg.task.name}: {meta['n']} inputs ({meta['feedback_inputs']} from "
        f"feedback), {len(meta['features'])} features + model view; "
        f"{timing['features_ms_per_input']} ms/input features, "
        f"{timing['model_view_ms_per_input']} ms/input model view"
    )


if __name__ == "__main__":
    run_stage(main)
