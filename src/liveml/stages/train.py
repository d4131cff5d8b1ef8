"""Stage train: train the task's model with `liveml.training.train`, the one training entry."""

from __future__ import annotations

from liveml.stages import run_stage


def main() -> None:
    from liveml.config import load_params
    from liveml.project import Project
    from liveml.training import train

    project = Project.find()
    record = train(load_params(project), project=project)
    print(f"train: run {record['run_id']} fingerprint {record['fingerprint'][:16]}")


if __name__ == "__main__":
    run_stage(main)
