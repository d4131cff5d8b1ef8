"""Sweep machinery: 4 small jobs sequential vs 2 parallel workers, and the per-job overhead.

Everything runs in one go on one machine, side by side, through the real entry point
(`python -m liveml.training -m ...`, W&B offline, run records, lineage), in a throw-away project
with a small generated dataset:

  single      one `python -m liveml.training` run (no sweep)
  seq-2thr    a 4-job multirun, basic (sequential) launcher, 2 torch threads per job (default)
  seq-1thr    the same with 1 thread per job
  parallel    the same 4 jobs, `hydra/launcher=parallel` (joblib, 2 workers), 1 thread per job

Speedup = sequential wall / parallel wall. Per-job overhead = wall time not spent in Lightning's
fit (process start, imports, config checks, lineage hashing, W&B, saving), per job.

    .venv/bin/python bench/sweep.py [--epochs 3] [--n-train 160]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def small(args) -> list[str]:
    return [
        "data.image_size=64",
        f"data.n_train={args.n_train}",
        "data.n_val=32",
        "data.n_test=8",
        "model.channels=[8,16,32,32]",
        "model.batch_size=16",
        f"trainer.max_epochs={args.epochs}",
    ]


def make_project(root: Path, overrides: list[str]) -> None:
    """A project with this repo's conf/, its params.yaml set to the small recipe, and that
    recipe's data at paths.data (so no job generates data)."""
    from liveml.core.config import compose, write_params
    from liveml.core.project import Project
    from liveml.tasks import get_task

    root.mkdir(parents=True)
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copyfile(REPO / "requirements.lock", root / "requirements.lock")
    project = Project(root)
    write_params(project, [f"tasks.defects.{o}" for o in overrides])
    cfg = compose(overrides, project=project)
    get_task("defects").generate(cfg, project.path(cfg.paths.data))


def timed(root: Path, argv: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(root), WANDB_MODE="offline", WANDB_SILENT="true")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", *argv], cwd=root, env=env, capture_output=True
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"failed: {argv}\n{out.stderr.decode()[-3000:]}")
    return wall


def fit_seconds(root: Path, since: set[str]) -> tuple[float, int]:
    """Sum of `train_seconds` of the runs recorded after `since`, and how many."""
    from liveml.core.project import Project
    from liveml.tracking.runs import RunStore

    new = [r for r in RunStore.for_project(Project(root)).list() if r["run_id"] not in since]
    return sum(r["train_seconds"] for r in new), len(new)


def run_ids(root: Path) -> set[str]:
    from liveml.core.project import Project
    from liveml.tracking.runs import RunStore

    return set(RunStore.for_project(Project(root)).ids())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=160)
    args = p.parse_args()
    overrides = small(args)
    seeds = "seed=0,1,2,3"
    cases = {
        "single": ["seed=9", "trainer.num_threads=2"],
        "seq-2thr": ["-m", seeds, "trainer.num_threads=2"],
        "seq-1thr": ["-m", seeds, "trainer.num_threads=1"],
        "parallel": ["-m", seeds, "trainer.num_threads=1", "hydra/launcher=parallel"],
    }
    with tempfile.TemporaryDirectory(prefix="liveml-bench-sweep-") as tmp:
        root = Path(tmp) / "proj"
        make_project(root, overrides)
        rows = {}
        for name, extra in cases.items():
            before = run_ids(root)
            wall = timed(root, [*extra, *overrides])
            fit, n = fit_seconds(root, before)
            rows[name] = (wall, fit, n)

    print(f"{os.cpu_count()} CPU cores; 4 jobs of {args.epochs} epochs x {args.n_train} images")
    print(f"{'case':10} {'jobs':>4} {'wall s':>7} {'fit s':>7} {'overhead/job s':>15}")
    for name, (wall, fit, n) in rows.items():
        print(f"{name:10} {n:4d} {wall:7.1f} {fit:7.1f} {(wall - fit) / n:15.2f}")
    par = rows["parallel"][0]
    for seq, threads in (("seq-2thr", "2 threads/job"), ("seq-1thr", "1 thread/job ")):
        print(f"speedup parallel (2 workers) vs sequential, {threads}: {rows[seq][0] / par:.2f}x")
    print("target: >= 1.6x")
    single = rows["single"][0] - rows["single"][1]
    per_job = (rows["seq-2thr"][0] - rows["seq-2thr"][1]) / rows["seq-2thr"][2]
    print(
        f"per-job overhead (wall - fit): single run {single:.2f} s, in a sequential sweep "
        f"{per_job:.2f} s (one process start and import shared by the 4 jobs)"
    )


if __name__ == "__main__":
    main()
