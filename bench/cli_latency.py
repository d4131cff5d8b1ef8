"""Latency of the everyday commands: `liveml --help` (target <= 1 s) and `dvc repro` with
nothing changed (target <= 3 s), measured in the project after one full `make repro`.

    .venv/bin/python bench/cli_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (ROOT / "dvc.lock").exists():
        sys.exit("run `make repro` first: the no-op repro is measured on a finished pipeline")
    for name, cmd, target in (
        ("liveml --help", ["liveml", "--help"], 1.0),
        ("dvc repro (nothing changed)", ["dvc", "repro"], 3.0),
    ):
        t = timed(cmd, args.runs)
        print(
            f"{name:30s} median {statistics.median(t):5.2f} s  max {max(t):5.2f} s"
            f"  (target <= {target:.0f} s, {args.runs} runs)"
        )


if __name__ == "__main__":
    main()
