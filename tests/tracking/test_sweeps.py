"""Hydra multiruns through `python -m liveml.training -m`: a run record and a W&B run per job,
grouped by the sweep; parallel (joblib) and submitit launchers; sweeps over the data recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from liveml.core.config import write_params
from liveml.tracking.runs import RunStore

from wandbfile import exit_codes, wandb_records

ONE_EPOCH = ["trainer.max_epochs=1"]


def multirun(project, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m liveml.training -m ...` in `project`, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(project.root), WANDB_MODE="offline")
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", "-m", *overrides],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def records(project) -> list[dict]:
    return sorted(RunStore.for_project(project).list(), key=lambda r: r["sweep"]["job"])


def run_of(wandb_dir: str):
    (f,) = Path(wandb_dir).glob("*.wandb")
    recs = wandb_records(f)
    runs = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    return f, runs


@pytest.mark.slow
def test_grid_gives_each_job_its_own_record_and_wandb_run(tiny_trainable, tiny_overrides):
    multirun(tiny_trainable, *tiny_overrides, *ONE_EPOCH, "model.lr=0.001,0.003", "seed=0,1")
    recs = records(tiny_trainable)
    assert [r["sweep"]["job"] for r in recs] == [0, 1, 2, 3]
    (name,) = {r["sweep"]["name"] for r in recs}
    assert name.startswith("sweeps/defects/") and (tiny_trainable.root / name).is_dir()
    combos = {(r["sweep"]["overrides"]["model.lr"], r["sweep"]["overrides"]["seed"]) for r in recs}
    assert combos == {("0.001", "0"), ("0.001", "1"), ("0.003", "0"), ("0.003", "1")}
    for r in recs:
        assert r["config"]["model"]["lr"] == float(r["sweep"]["overrides"]["model.lr"])
        assert r["status"] == "finished" and r["metrics"]["val/map_50"] >= 0
        # Outputs live in the sweep folder, one per job.
        job_dir = tiny_trainable.root / name / str(r["sweep"]["job"])
        assert json.loads((job_dir / "model" / "run.json").read_text())["run_id"] == r["run_id"]

    # One W&B run per job, each finished, grouped by the sweep, carrying what it varied.
    ids = [r["wandb"]["id"] for r in recs]
    assert len(set(ids)) == 4
    for r in recs:
        f, runs = run_of(r["wandb"]["dir"])
        assert {run.run_id for run in runs} == {r["wandb"]["id"]}
        (run,) = runs[:1]
        assert run.run_group == name
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["sweep_params"] == r["sweep"]["overrides"]
        assert config["lineage"]["fingerprint_parts"] == r["fingerprint_parts"]
        assert exit_codes(f) == [0]
    # Same code and data, different hyperparameters: only the config part differs.
    parts = [r["fingerprint_parts"] for r in recs]
    assert len({p["code"] for p in parts}) == 1 and len({p["data"] for p in parts}) == 1
    assert len({p["config"] for p in parts}) == 4


@pytest.mark.slow  # 12 s; the 2x2 grid test checks every job's W&B run
def test_a_failing_job_finishes_its_own_wandb_run_only(tiny_trainable, tiny_overrides):
    # batch_size 0 fails inside fit, after its W&B run has started.
    out = multirun(tiny_trainable, *tiny_overrides, *ONE_EPOCH, "model.batch_size=8,0", check=False)
    assert out.returncode != 0
    assert "batch_size" in out.stderr
    (ok,) = RunStore.for_project(tiny_trainable).list()
    assert ok["sweep"]["job"] == 0 and ok["config"]["model"]["batch_size"] == 8
    files = sorted((tiny_trainable.root / "wandb" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 2
    codes = {}
    for f in files:
        (run_id,) = {r.run.run_id for r in wandb_records(f) if r.WhichOneof("record_type") == "run"}
        codes[run_id] = exit_codes(f)
    assert codes.pop(ok["wandb"]["id"]) == [0]
    assert list(codes.values()) == [[1]]  # the failed job's own run, finished as failed


@pytest.mark.slow
def test_parallel_launcher_runs_jobs_in_worker_processes(tiny_trainable, tiny_overrides):
    out = multirun(
        tiny_trainable,
        *tiny_overrides,
        *ONE_EPOCH,
        "hydra/launcher=parallel",
        "seed=0,1",
    )
    assert "Joblib.Parallel" in out.stdout + out.stderr
    recs = records(tiny_trainable)
    assert [r["sweep"]["overrides"]["seed"] for r in recs] == ["0", "1"]
    hydra_cfg = yaml.safe_load(
        (tiny_trainable.root / recs[0]["sweep"]["name"] / "0" / ".hydra" / "hydra.yaml").read_text()
    )
    assert hydra_cfg["hydra"]["launcher"]["n_jobs"] == 2


@pytest.mark.slow  # 27 s; the joblib launcher test covers parallel jobs in the default suite
def test_submitit_local_executor_runs_the_jobs(tiny_trainable, tiny_overrides):
    multirun(
        tiny_trainable,
        *tiny_overrides,
        *ONE_EPOCH,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "seed=0,1",
    )
    recs = records(tiny_trainable)
    assert len(recs) == 2 and all(r["status"] == "finished" for r in recs)
    sweep_dir = tiny_trainable.root / recs[0]["sweep"]["name"]
    # submitit's own job folders: the jobs ran as submitit jobs, not in this process.
    assert list(sweep_dir.glob(".submitit/*/*_result.pkl"))


def test_slurm_launcher_config_composes(tiny_project):
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", "hydra/launcher=slurm", "--cfg", "hydra"],
        cwd=tiny_project.root,
        env={**os.environ, "LIVEML_ROOT": str(tiny_project.root)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    launcher = yaml.safe_load(out.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == 1 and launcher["timeout_min"] == 120


def luminance(data_dir: Path) -> float:
    files = sorted((data_dir / "images" / "train").glob("*.png"))[:8]
    return float(np.mean([np.asarray(Image.open(f).convert("L")) for f in files]))


@pytest.mark.slow
def test_data_recipe_sweep_trains_each_job_on_its_own_data(tiny_trainable, tiny_overrides):
    # The pipeline's recipe is the tiny one: brightness 1.0 is the DVC-tracked data at
    # paths.data, brightness 0.5 is generated on demand for its job.
    write_params(tiny_trainable, [f"tasks.defects.{o}" for o in tiny_overrides])
    multirun(tiny_trainable, *tiny_overrides, *ONE_EPOCH, "data.brightness=0.5,1.0")
    dark, normal = records(tiny_trainable)
    assert list(normal["data"]) == ["data/defects/raw"]
    (dark_path,) = dark["data"]
    assert dark_path.startswith("data/defects/recipes/")
    assert dark["data"][dark_path] != normal["data"]["data/defects/raw"]
    assert dark["fingerprint_parts"]["data"] != normal["fingerprint_parts"]["data"]
    dark_dir = tiny_trainable.path(dark_path)
    ann = json.loads((dark_dir / "annotations" / "train.json").read_text())
    assert ann["info"]["recipe"]["brightness"] == 0.5
    assert luminance(dark_dir) < 0.7 * luminance(tiny_trainable.path("data/defects/raw"))


def test_a_misspelt_key_names_the_key(tiny_trainable, tiny_overrides):
    out = multirun(tiny_trainable, *tiny_overrides, *ONE_EPOCH, "data.brightnes=0.5", check=False)
    assert out.returncode != 0
    assert "data.brightnes" in out.stderr
