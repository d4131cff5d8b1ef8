"""A tiny copy of this repo as a git + DVC project, for tests that run the real pipeline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Recipes small enough to run both tasks' pipelines end to end in about a minute.
TINY = {
    "data/defects.yaml": {"image_size": 64, "n_train": 24, "n_val": 8, "n_test": 8},
    # Score threshold 0: even a barely trained detector answers with boxes (serving tests).
    "model/fcos_tiny.yaml": {
        "channels": [8, 16, 16, 32],
        "fpn_channels": 32,
        "batch_size": 8,
        "score_thresh": 0.0,
    },
    "data/speech.yaml": {"n_train": 16, "n_val": 8, "n_test": 8},
    "model/crnn_ctc.yaml": {"rnn_hidden": 32, "rnn_layers": 1, "batch_size": 8},
    "trainer/cpu.yaml": {"max_epochs": 2},
    "monitor/default.yaml": {"reference_size": 60, "permutations": 199},
}
STAGES = ("generate", "validate", "train", "evaluate", "export", "reference")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "offline"}
    for var in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME", "LIVEML_ROOT"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def git(repo: Path, *args: str) -> None:
    run(["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", *args], repo)


def set_values(conf: Path, rel: str, values: dict) -> None:
    path = conf / rel
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def ran_stages(out: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", out.stdout))


def build(root: Path) -> Path:
    """A git repo at `root` holding the project's files with the TINY recipe, after one
    `dvc repro` (its output in first_repro.log) and a commit of the results."""
    files = run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    for rel, values in TINY.items():
        set_values(root / "conf", rel, values)
    run(["git", "init", "-q", "-b", "main"], root)
    run(["liveml", "params"], root)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny project")
    first = run(["dvc", "repro"], root)
    (root / "first_repro.log").write_text(first.stdout)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first repro")
    return root
