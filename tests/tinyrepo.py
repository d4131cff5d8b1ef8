"""A tiny copy of this repo as a git + DVC project, for tests that run the real pipeline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Recipes small enough to run both tasks' pipelines end to end in about a minute: values set in
# the project's conf/<file> (nested mappings are merged). The trainer, logger, paths and monitor
# groups ship with liveml, so the tiny monitor settings go where the project sets values itself.
TINY_MONITOR = {"reference_size": 60, "permutations": 199}
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
    "trainer/defects.yaml": {"max_epochs": 2},
    "trainer/speech.yaml": {"max_epochs": 2},
    "config.yaml": {"monitor": TINY_MONITOR},
    "pipeline.yaml": {"tasks": {t: {"monitor": TINY_MONITOR} for t in ("defects", "speech")}},
}
STAGES = ("generate", "validate", "train", "evaluate", "export", "reference")

# Written as sitecustomize.py into a folder put on PYTHONPATH for the first `dvc repro`: every
# Python process of the repro records its command line and the files of the modules it imported
# (at exit, so lazy imports count) into $LIVEML_IMPORT_TRACE/<pid>.json. No production hook.
TRACE_HOOK = """\
import os

if os.environ.get("LIVEML_IMPORT_TRACE"):
    import atexit
    import json
    import sys

    def _dump():
        mods = list(sys.modules.values())
        files = sorted({f for m in mods if (f := getattr(m, "__file__", None))})
        out = os.path.join(os.environ["LIVEML_IMPORT_TRACE"], f"{os.getpid()}.json")
        with open(out, "w") as fh:
            json.dump({"argv": sys.argv, "files": files}, fh)

    atexit.register(_dump)
"""


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with the venv's tools first on PATH (plus `env`); fail on error."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "offline",
        **(env or {}),
    }
    for var in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME", "LIVEML_ROOT"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def git(repo: Path, *args: str) -> None:
    run(["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", *args], repo)


def set_values(conf: Path, rel: str, values: dict) -> None:
    """Set `values` in conf/<rel>; a mapping value is merged into the file's mapping."""

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    path = conf / rel
    data = yaml.safe_load(path.read_text())
    merge(data, values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def ran_stages(out: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", out.stdout))


def trace_dir(root: Path) -> Path:
    """Where the first `dvc repro` of the tiny repo at `root` left its import traces."""
    return root.parent / "import-trace"


def traces(root: Path) -> list[dict]:
    """The import traces of the first repro: {"argv": [...], "files": [...]} per process."""
    return [json.loads(p.read_text()) for p in sorted(trace_dir(root).glob("*.json"))]


def build(root: Path) -> Path:
    """A git repo at `root` holding the project's files with the TINY recipe, after one
    `dvc repro` (its output in first_repro.log; every process's imports in `trace_dir(root)`)
    and a commit of the results."""
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
    trace = trace_dir(root)
    (trace / "hook").mkdir(parents=True)
    (trace / "hook" / "sitecustomize.py").write_text(TRACE_HOOK)
    hook_path = os.pathsep.join(filter(None, [str(trace / "hook"), os.environ.get("PYTHONPATH")]))
    first = run(
        ["dvc", "repro"], root, env={"PYTHONPATH": hook_path, "LIVEML_IMPORT_TRACE": str(trace)}
    )
    (root / "first_repro.log").write_text(first.stdout)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first repro")
    return root
