"""A built-in task's checked config for unit tests: the repo's conf/ with a few values merged."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check(values: dict):
    """The repo's conf/ for `values["task"]["name"]` with `values` merged over it, and the
    trainer's epochs at 1 unless given (values live only in YAML: schemas have no defaults)."""
    from omegaconf import OmegaConf

    from liveml.core.config import check as checked
    from liveml.core.config import compose
    from liveml.core.project import Project

    base = compose([f"task={values['task']['name']}"], project=Project(REPO))
    return checked(OmegaConf.merge(base, {"trainer": {"max_epochs": 1}}, values))
