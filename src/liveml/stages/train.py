"""Stage train: train the task's model with `liveml.training.run.train`, the one training entry."""

from __future__ import annotations

from liveml.stages import run_stage, stage_config


def main() -> None:
    from liveml.training.run import train

    project, cfg = stage_config()
    record = train(cfg, project=project)
    print(f"train: run {record['run_id']} fingerprint {record['fingerprint'][:16]}")


if __name__ == "__main__":
    run_stage(main)
