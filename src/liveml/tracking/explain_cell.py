"""Hydra app of `liveml explain`: one multirun over `cell=0,1,...`, launched by the project's
Hydra launcher (joblib on one machine, SLURM on a cluster). Job `cell=N` reads cell N of the
plan file the driver wrote, and trains it in a subprocess whose working folder is the cell's
re-created code worktree, with the worktree's `src/` first on PYTHONPATH: the code that trains
is the recorded code, liveml's own included when the project is liveml's repository.

`python -m liveml.tracking.explain_cell --config-dir DIR --config-name explain -m cell=0,1`
(the driver, `liveml.tracking.explain`, writes DIR and runs this).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Variables of the driver's environment that would point the cell at another project or
# another DVC experiment than its own worktree.
DROPPED_ENV = ("LIVEML_ROOT", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")


def cell_env(root: Path) -> dict[str, str]:
    """The environment of a cell's training: the worktree's code first on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    src = root / "src"
    first = str(src if src.is_dir() else root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [first, env.get("PYTHONPATH")]))
    # No __pycache__ written into the worktree: where git does not ignore it, it would be an
    # untracked change, and the cell's code state would no longer be the recorded one.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_cell(plan_file: str | os.PathLike, cell: int) -> dict:
    """Train cell `cell` of the plan (in a subprocess); returns and writes its result, also
    when the training failed (status `incompatible`, the error's first line)."""
    plan = json.loads(Path(plan_file).read_text())
    spec_file = Path(plan["cells"][str(cell)])
    spec = json.loads(spec_file.read_text())
    root, result = Path(spec["root"]), Path(spec["result"])
    result.unlink(missing_ok=True)
    log = Path(spec["log"])
    with open(log, "wb") as out:
        proc = subprocess.run(
            [sys.executable, plan["runner"], str(spec_file)],
            cwd=root,
            env=cell_env(root),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.is_file():
        return json.loads(result.read_text())
    # The runner died before it could write its result (a crash of the interpreter, a kill).
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    found = {
        "status": "incompatible",
        "error": f"the training process exited with status {proc.returncode}: {tail[0]}",
        "log": str(log),
    }
    result.write_text(json.dumps(found))
    return found


def main() -> None:
    import hydra

    @hydra.main(config_path=None, config_name=None, version_base="1.3")
    def job(cfg) -> dict:
        return run_cell(cfg.plan, int(cfg.cell))

    job()


if __name__ == "__main__":
    main()
