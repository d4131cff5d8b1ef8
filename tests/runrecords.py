"""Run records for the run-store tests: realistic records, metric logs, a two-commit repo."""

from __future__ import annotations

import subprocess
from pathlib import Path

from liveml.tracking.runs import RunStore

COMMIT_A = "a" * 40
DATA_A = "a18d03ffcaf6c3e42aa67074192bb2f7.dir"
DATA_B = "b6a27939ba43bf5d83aa2a92d3f64fe0.dir"


def make_record(
    run_id: str,
    *,
    task: str = "defects",
    lr: float = 0.004,
    batch_size: int = 16,
    brightness: float = 1.0,
    commit: str | None = COMMIT_A,
    dirty: bool = False,
    data_hash: str = DATA_A,
    sweep=None,
    status: str | None = None,
    metrics: dict | None = None,
) -> dict:
    """A run record shaped like the real ones (full config, code, data, metrics)."""
    config = {
        "seed": 0,
        "task": {"name": task, "classes": ["scratch", "crack", "spot"]},
        "model": {
            "name": "fcos_tiny",
            "channels": [24, 48, 96, 192],
            "lr": lr,
            "weight_decay": 0.0001,
            "batch_size": batch_size,
        },
        "data": {
            "seed": 0,
            "image_size": 160,
            "n_train": 1200,
            "capture": {"brightness": brightness, "blur": 0.6},
        },
        "trainer": {"accelerator": "cpu", "max_epochs": 30, "precision": "32-true"},
        # Differ per run, but say nothing about what was trained: never "varied".
        "logger": {"mode": "offline", "dir": f"wandb/{run_id}"},
        "paths": {"data": f"data/{task}/raw", "model": f"models/{run_id}", "runs": "runs"},
    }
    record = {
        "run_id": run_id,
        "task": task,
        "created": "2026-11-25T03:47:15Z",
        "fingerprint": run_id[-8:] * 8,
        "code": {"commit": commit, "dirty": dirty, "diff_sha256": "d" * 64 if dirty else None},
        "config": config,
        "data": {f"data/{task}/raw": data_hash},
        "environment": {"python": "3.11.7", "torch": "2.11.0"},
        "seed": 0,
        "metrics": {"train/loss": 0.9, "val/map": 0.5, "val/map_50": 0.8}
        if metrics is None
        else metrics,
        "weights_sha256": "f" * 64,
        "wandb": None,
        "resumed_from": None,
        "sweep": sweep,
        "train_seconds": 12.5,
        "epochs": 3,
        "global_step": 30,
    }
    if status is not None:
        record["status"] = status
    return record


def write_metrics_csv(path: Path, steps: int = 30, final: float = 0.8) -> Path:
    """A metrics.csv like training writes: train loss every step, val metrics per epoch."""
    lines = ["step,epoch,train/loss,val/map,val/map_50"]
    for step in range(steps):
        epoch = step // 10
        last_of_epoch = step % 10 == 9
        val = f"{final * (epoch + 1) / 3:.4f}" if last_of_epoch else ""
        lines.append(f"{step},{epoch},{1.0 / (step + 1):.5f},{val},{val}")
    path.write_text("\n".join(lines) + "\n")
    return path


def save_runs(store: RunStore, records: list[dict], tmp_path: Path) -> list[str]:
    """Save records with a metrics.csv each; returns their run ids."""
    ids = []
    for r in records:
        csv = write_metrics_csv(
            tmp_path / f"{r['run_id']}.csv", final=r["metrics"].get("val/map_50", 0.5)
        )
        ids.append(store.save(r, files={"metrics.csv": csv}).name)
    return ids


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def init_two_commits(repo: Path) -> tuple[Path, str, str]:
    """A git repo at `repo` with two commits (the second edits train.py): (repo, first, second)."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("lr = 0.001\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first recipe")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("lr = 0.01\nwarmup = 100\n")
    git(repo, "commit", "-qam", "raise the learning rate")
    return repo, first, git(repo, "rev-parse", "HEAD")
