"""Speed of `liveml compare` on big run stores: 10,000 and 100,000 realistic runs.

For each size, a throw-away project gets a run store written directly as files
(bench/runstore_gen.py: two tasks with their full configs, Hydra grid and Optuna sweeps, DVC
experiments, reproductions, final metrics, a metrics.csv per run and a 1,000-step log for 1 run
in 100), with no index: what rsync or an older liveml leaves. Then:

- the index is built from scratch (one process, timed);
- each command below runs as its own `liveml` process, 5 times: median and max wall time,
  median CPU time (user + sys) of the process;
- `after a new run`: a run saved through RunStore.save (the writer updates the index), then
  `liveml compare`; `after an rsync'd run`: a run folder copied in (the reader re-lists);
- at 10,000 runs, the same table without the index (LIVEML_RUN_INDEX=off: every run.json read).

Targets (issue 15): the table <= 1 s for the whole process, `--diff` <= 0.5 s.
The machine's load average is printed: on a shared machine wall times include waiting.

    .venv/bin/python bench/compare.py [--runs 10000,100000] [--repeat 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runstore_gen import write_store

TARGETS = {"table": 1.0, "diff": 0.5}


def liveml(root: Path, args: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `liveml ARGS` process in project `root`."""
    env = {**os.environ, "LIVEML_ROOT": str(root), **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "liveml", *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"liveml {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def python_startup(repeat: int) -> tuple[float, float]:
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), max(walls)


def build_index(runs: Path) -> tuple[float, dict]:
    """Seconds to build the index of `runs` from scratch in a fresh process, and its counts."""
    code = (
        "import json, sys; from liveml.tracking.index import RunIndex; "
        "i = RunIndex(sys.argv[1]).open(); print(json.dumps(i.sync()))"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(runs)], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, json.loads(out.stdout)


def one_run(root: Path, template: str, i: int) -> None:
    """Save one more run through RunStore.save (the writer path, which updates the index)."""
    from liveml.tracking.runs import RunStore

    store = RunStore(root / "runs")
    record = json.loads((store.path / template / "run.json").read_text())
    record["run_id"] = f"20991231-{i:06d}-benchrun"
    record["metrics"] = {k: v * 1.01 for k, v in record["metrics"].items()}
    store.save(record, files={"metrics.csv": store.path / template / "metrics.csv"})


def bench_size(base: Path, n: int, repeat: int) -> None:
    root = base / f"proj{n}"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text("# liveml compare bench project\n")
    runs = root / "runs"
    load = os.getloadavg()
    start = time.perf_counter()
    stepped = write_store(runs, n)
    written = time.perf_counter() - start
    size = sum(f.stat().st_size for f in runs.rglob("*") if f.is_file()) / 2**20
    print(
        f"\n== {n:,} runs ({stepped:,} with a 1,000-step log; {size:,.0f} MiB of files), "
        f"written in {written:.1f} s (plain json/os, no liveml)"
    )
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )

    if n <= 20_000:
        wall, cpu = liveml(root, ["compare"], env={"LIVEML_RUN_INDEX": "off"})
        print(
            f"without the index (every run.json read): liveml compare {wall:.2f} s "
            f"(cpu {cpu:.2f} s)"
        )
    built, counts = build_index(runs)
    db = (runs / ".index" / "runs.sqlite").stat().st_size / 2**20
    print(
        f"index built from scratch: {built:.1f} s ({counts['added']:,} runs, "
        f"{db:.0f} MiB: runs/.index/runs.sqlite)"
    )
    time.sleep(2.5)  # past the settle time of the runs folder's mtime (see liveml.tracking.index)
    liveml(root, ["compare", "--limit", "1"])  # the first reader records the settled gate

    names = sorted(e for e in os.listdir(runs) if not e.startswith("."))
    a, b = names[len(names) // 3], names[-1]
    cases = [
        ("liveml compare (table)", "table", ["compare"]),
        ("--sort val/loss --desc", "table", ["compare", "--sort", "val/loss", "--desc"]),
        ("--sort model.lr", "table", ["compare", "--sort", "model.lr"]),
        ("--json", "table", ["compare", "--json"]),
        ("--task speech", "table", ["compare", "--task", "speech"]),
        ("--status pruned", "table", ["compare", "--status", "pruned"]),
        ("--sweep last", "table", ["compare", "--sweep", "last"]),
        ("--sort val/loss --limit 20", "table", ["compare", "--sort", "val/loss", "--limit", "20"]),
        ("--diff A B (ids)", "diff", ["compare", "--diff", a, b]),
        ("--diff A B (id prefixes)", "diff", ["compare", "--diff", a[:15], b[:15]]),
    ]
    print(f"{'command':30s} {'median':>8s} {'max':>8s} {'cpu':>7s}  target")
    for name, kind, args in cases:
        t = [liveml(root, args) for _ in range(repeat)]
        report(name, [w for w, _ in t], [c for _, c in t], TARGETS.get(kind))

    t = []
    for i in range(repeat):
        one_run(root, a, i)
        t.append(liveml(root, ["compare"]))
    report("after a new run (writer)", [w for w, _ in t], [c for _, c in t], TARGETS["table"])
    t = []
    for i in range(repeat):
        shutil.copytree(runs / a, runs / f"20991231-rsync{i:02d}-copy")
        t.append(liveml(root, ["compare"]))
    report("after an rsync'd run (re-list)", [w for w, _ in t], [c for _, c in t], TARGETS["table"])
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def report(name: str, walls: list[float], cpus: list[float], target: float | None) -> None:
    med = statistics.median(walls)
    goal = f"<= {target:g} s {'ok' if med <= target else 'MISSED'}" if target else ""
    print(f"{name:30s} {med:7.3f}s {max(walls):7.3f}s {statistics.median(cpus):6.3f}s  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10000,100000", help="comma-separated store sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temp stores go (default: $TMPDIR)")
    args = parser.parse_args()
    med, worst = python_startup(args.repeat)
    print(f"python startup (baseline): median {med:.3f} s, max {worst:.3f} s")
    for n in (int(x) for x in args.runs.split(",")):
        with tempfile.TemporaryDirectory(prefix="liveml-bench-compare-", dir=args.dir) as tmp:
            bench_size(Path(tmp), n, args.repeat)


if __name__ == "__main__":
    main()
