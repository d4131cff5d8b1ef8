"""DVC experiments on the same configs: a queued grid run by 2 workers, listed by `dvc exp
show`, each leaving its run record in the repo it was queued from."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from liveml.core.project import Project
from liveml.tracking.runs import RunStore

from tinyrepo import run


@pytest.fixture
def repo(tiny_pipeline: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    return root


def wait_for_queue(repo: Path, timeout_s: float = 480) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(s in status for s in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout_s} s:\n{status}"
        time.sleep(2)


def experiments(repo: Path) -> dict[str, dict]:
    """{experiment name: {"params": ..., "metrics": ...}} from `dvc exp show --json`."""
    out = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout):
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev["data"]
            out[exp["name"] or rev["name"]] = {
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"],
            }
    return out


# 77 s: slow. The default suite still runs a DVC experiment end to end (tests/test_retrain.py).
@pytest.mark.slow
def test_queued_grid_runs_on_two_workers(repo: Path):
    from liveml.core.config import pipeline_tasks
    from liveml.tasks import get_task

    task = pipeline_tasks(Project(repo))[0]
    metrics_file = yaml.safe_load((repo / "params.yaml").read_text())["tasks"][task]["paths"][
        "metrics"
    ]
    headline = get_task(task).headline.metric
    before = {r["run_id"] for r in RunStore.for_project(Project(repo)).list()}
    run(["dvc", "exp", "run", "--queue", "-S", f"tasks.{task}.seed=1,2"], repo)
    queued = run(["dvc", "queue", "status"], repo).stdout
    assert queued.count("Queued") == 2, queued
    run(["dvc", "queue", "start", "-j", "2"], repo)
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status + run(["dvc", "queue", "logs", "-h"], repo).stdout

    exps = experiments(repo)
    seeds = {name: e["params"]["tasks"][task]["seed"] for name, e in exps.items()}
    assert sorted(seeds.values()) == [1, 2]
    for name, e in exps.items():
        assert e["metrics"][metrics_file]["data"][headline] >= 0, name

    # The experiments ran in throw-away copies; their run records came home to this repo.
    new = [r for r in RunStore.for_project(Project(repo)).list() if r["run_id"] not in before]
    trained = [r for r in new if r["task"] == task]
    assert sorted(r["config"]["seed"] for r in trained) == [1, 2]
    for r in trained:
        assert r["sweep"]["kind"] == "dvc" and r["sweep"]["experiment"] in seeds
        assert seeds[r["sweep"]["experiment"]] == r["config"]["seed"]
        assert Path(r["wandb"]["dir"]).is_relative_to(repo / "wandb")
    assert len({r["sweep"]["name"] for r in trained}) == 1  # one baseline: one group
