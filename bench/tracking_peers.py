"""liveml's tracking side by side with its peers, in one run on one machine: MLflow (a local
SQLite store), W&B offline and DVCLive.

(a) Logging 10,000 scalar values from a training loop (one value per step, no other work):
    `loop` is the time the loop spends in logging calls (what the training waits for), `finish`
    the time to close the run afterwards (everything written), `per value` = (loop + finish) /
    10,000. liveml is measured as `train(cfg)` uses it: its CSV metric log (written at each
    epoch start; an epoch = 100 steps here) plus the W&B worker process (BackgroundWandb);
    also with the CSV log alone (`logger.mode=disabled`). MLflow: `mlflow.log_metric` into a
    SQLite store, synchronous (its default) and with its asynchronous logging; W&B:
    `wandb.log` offline; DVCLive: `log_metric` + `next_step`.
(b) A run's fixed cost: start a run, log one value, finish, in a fresh process (a training
    script's life): the whole process, and the imports and the start/log/finish inside it.
    MLflow's SQLite store exists already (made once before, as a user's store would be).
(c) 1,000 realistic runs (bench/runstore_gen.py: two tasks' full configs, Hydra grid and
    Optuna sweeps with pruned trials, DVC experiments...) written through each tracker's writer
    (liveml: RunStore.save with its index; MLflow: a run with the config as params, the lineage
    as tags (`logger=mlflow`'s own, `liveml.tracking.loggers.mlflow_params/mlflow_tags`), the
    final metrics, the status), then the same filter + sort: `liveml compare` (a whole process,
    the CLI's code path) vs `mlflow.search_runs` (a whole process too, and the call alone in
    it). Both answers are checked to hold the same runs in the same order of the sort key.

Each figure is the median of --repeat runs (3). Per-run creation in (c) is the median over
the 1,000 runs. Every figure is also given as a ratio to liveml's (peer / liveml: above 1 =
liveml is faster). The load average is printed: on a shared machine wall times include waiting.

    .venv/bin/python bench/tracking_peers.py [--repeat 3] [--values 10000] [--runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Nothing is sent anywhere: no telemetry, no version checks.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

STEPS_PER_EPOCH = 100
EXPERIMENT = "liveml"


# --- one measured run in its own process (`--child KIND --dir DIR --values N`) --------------


def _config(tmp: Path, mode: str = "offline") -> dict:
    from runstore_gen import defects_config

    cfg = defects_config({"seed": 0, "lr": 0.004})
    cfg["logger"] = {"mode": mode, "project": EXPERIMENT, "entity": None, "dir": str(tmp / "wb")}
    return cfg


def _record(cfg: dict) -> dict:
    return {
        "run_id": f"20261203-120000-{os.getpid():08x}"[:24],
        "task": "defects",
        "fingerprint": "ab" * 32,
        "fingerprint_parts": {"code": "c" * 64, "config": "d" * 64, "data": "e" * 64},
        "code": {"commit": "f" * 40, "dirty": False, "diff_sha256": None},
        "config": cfg,
        "data": {"data/defects/raw": "0123abcd.dir"},
        "sweep": None,
    }


class Tool:
    """start() / log(step, value) / epoch_end() / finish() of one tracker."""

    def __init__(self, kind: str, tmp: Path):
        self.kind, self.tmp = kind, tmp

    def start(self) -> None:
        k, tmp = self.kind, self.tmp
        if k.startswith("liveml"):
            from omegaconf import OmegaConf

            from liveml.core.project import Project
            from liveml.tracking.loggers import open_tracking

            if k == "liveml-csv":  # WANDB_MODE wins over logger.mode (liveml's rule)
                os.environ["WANDB_MODE"] = "disabled"
            cfg = _config(tmp, "disabled" if k == "liveml-csv" else "offline")
            self.tr = open_tracking(
                OmegaConf.create(cfg), _record(cfg), tmp / "work", project=Project(tmp)
            )
            self.loggers = self.tr.loggers
        elif k.startswith("mlflow"):
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
            mlflow.set_experiment(EXPERIMENT)
            self.sync = k == "mlflow"
            self.run = mlflow.start_run()
            self.mlflow = mlflow
        elif k == "wandb":
            import wandb

            self.run = wandb.init(project=EXPERIMENT, dir=str(tmp), mode="offline")
        elif k == "dvclive":
            from dvclive import Live

            self.live = Live(str(tmp / "dvclive"), save_dvc_exp=False, dvcyaml=None)

    def log(self, step: int, value: float) -> None:
        k = self.kind
        if k.startswith("liveml"):
            for lg in self.loggers:  # what Lightning does with the trainer's loggers
                lg.log_metrics({"train/loss": value}, step=step)
        elif k.startswith("mlflow"):
            self.mlflow.log_metric("train/loss", value, step=step, synchronous=self.sync)
        elif k == "wandb":
            self.run.log({"train/loss": value}, step=step)
        elif k == "dvclive":
            self.live.log_metric("train/loss", value)
            self.live.next_step()

    def epoch_end(self) -> None:
        if self.kind.startswith("liveml"):
            self.tr.csv.flush()  # FlushMetricsCSV at the next epoch's start

    def finish(self) -> None:
        k = self.kind
        if k.startswith("liveml"):
            self.tr.finish()
            self.tr.close()
        elif k.startswith("mlflow"):
            self.mlflow.end_run()  # flushes the asynchronous queue first
        elif k == "wandb":
            self.run.finish()
        elif k == "dvclive":
            self.live.end()


def _import(kind: str) -> None:
    if kind.startswith("liveml"):
        import liveml.tracking.loggers  # noqa: F401  (imports Lightning, as train(cfg) does)
    elif kind.startswith("mlflow"):
        import mlflow  # noqa: F401
    elif kind == "wandb":
        import wandb  # noqa: F401
    elif kind == "dvclive":
        import dvclive  # noqa: F401


def child(kind: str, tmp: Path, values: int) -> dict:
    t0 = time.perf_counter()
    _import(kind)
    t1 = time.perf_counter()
    tool = Tool(kind, tmp)
    tool.start()
    t2 = time.perf_counter()
    c2 = time.process_time()
    for step in range(values):
        tool.log(step, 1.0 / (step + 1))
        if (step + 1) % STEPS_PER_EPOCH == 0:
            tool.epoch_end()
    t3 = time.perf_counter()
    tool.finish()
    t4 = time.perf_counter()
    c4 = time.process_time()
    return {
        "import": t1 - t0,
        "start": t2 - t1,
        "loop": t3 - t2,
        "finish": t4 - t3,
        "logging_cpu": c4 - c2,  # this process's CPU in the loop + finish (not its children)
    }


def run_child(kind: str, tmp: Path, values: int) -> dict:
    """One fresh process of `child`: its own figures plus the whole process's wall time."""
    tmp.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--dir", str(tmp), "--values", str(values)],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{kind} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall, "cpu": cpu}


LOGGING = {
    "liveml": "liveml (CSV log + W&B worker, as train(cfg))",
    "liveml-csv": "liveml (CSV log only, W&B disabled)",
    "mlflow": "MLflow (SQLite, synchronous: its default)",
    "mlflow-async": "MLflow (SQLite, asynchronous logging)",
    "wandb": "W&B offline (wandb.log)",
    "dvclive": "DVCLive (log_metric + next_step)",
}


def _prepare_mlflow_store(tmp: Path) -> None:
    """Create the SQLite store (schema migrations) and the experiment, untimed."""
    code = (
        "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); "
        f"mlflow.set_experiment({EXPERIMENT!r})"
    )
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", code, uri], check=True, capture_output=True, cwd=tmp)


def _ratio(value: float, med: dict, key: str) -> str:
    return f"{value / med['liveml'][key]:8.2f}x" if "liveml" in med else f"{'':>9s}"


def bench_logging(base: Path, values: int, repeat: int, kinds: list[str]) -> dict:
    print(f"\n== (a) logging {values:,} scalar values from a training loop (1 per step)")
    print(
        f"{'':46s} {'loop':>8s} {'finish':>8s} {'per value':>10s} {'vs liveml':>9s} "
        f"{'cpu/value':>10s} {'process cpu':>11s}"
    )
    med = {}
    for kind, label in LOGGING.items():
        if kind not in kinds:
            continue
        runs = []
        for i in range(repeat):
            tmp = base / f"log-{kind}-{i}"
            tmp.mkdir(parents=True)
            if kind.startswith("mlflow"):
                _prepare_mlflow_store(tmp)
            runs.append(run_child(kind, tmp, values))
        loop = statistics.median(r["loop"] for r in runs)
        finish = statistics.median(r["finish"] for r in runs)
        per = statistics.median((r["loop"] + r["finish"]) / values for r in runs)
        cpu = statistics.median(r["logging_cpu"] / values for r in runs)
        tree = statistics.median(r["cpu"] for r in runs)
        med[kind] = {"loop": loop, "finish": finish, "per_value_us": per * 1e6, "cpu_us": cpu * 1e6}
        ratio = _ratio(per * 1e6, med, "per_value_us")
        print(
            f"{label:46s} {loop:7.2f}s {finish:7.2f}s {per * 1e6:8.1f}us {ratio} "
            f"{cpu * 1e6:8.1f}us {tree:10.2f}s",
            flush=True,
        )
    return med


def bench_fixed(base: Path, repeat: int, kinds: list[str]) -> dict:
    print("\n== (b) start a run, log one value, finish: a fresh process each")
    print(
        f"{'':46s} {'process':>8s} {'imports':>8s} {'start':>7s} {'log':>7s} {'finish':>7s} "
        f"{'vs liveml':>9s} {'cpu':>7s}"
    )
    med = {}
    for kind in ("liveml", "liveml-csv", "mlflow", "wandb", "dvclive"):
        if kind not in kinds:
            continue
        runs = []
        for i in range(repeat):
            tmp = base / f"one-{kind}-{i}"
            tmp.mkdir(parents=True)
            if kind == "mlflow":
                _prepare_mlflow_store(tmp)
            runs.append(run_child(kind, tmp, 1))
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med[kind] = m
        ratio = _ratio(m["wall"], med, "wall")
        label = LOGGING[kind].split(" (")[0] + (" (CSV only)" if kind == "liveml-csv" else "")
        print(
            f"{label:46s} {m['wall']:7.2f}s {m['import']:7.2f}s {m['start']:6.2f}s "
            f"{m['loop']:6.3f}s {m['finish']:6.2f}s {ratio} {m['cpu']:6.2f}s",
            flush=True,
        )
    return med


# --- (c) 1,000 runs: write, then filter + sort ---------------------------------------------


def _mlflow_write(uri: str, records: list[dict]) -> list[float]:
    """Each record as an MLflow run the way `logger=mlflow` makes it; seconds per run."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from liveml.tracking.loggers import mlflow_params, mlflow_tags

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    times = []
    for rec in records:
        start = time.perf_counter()
        stamp = int(time.time() * 1000)
        run = client.create_run(exp_id, run_name=rec["run_id"], tags=mlflow_tags(rec))
        rid = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in mlflow_params(rec["config"]).items()]
        metrics = [Metric(k, v, stamp, rec["global_step"]) for k, v in rec["metrics"].items()]
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i : i + 100], metrics=metrics if i == 0 else [])
        client.log_batch(rid, tags=[RunTag("liveml.status", rec["status"])])
        client.set_terminated(rid, "FINISHED" if rec["status"] == "finished" else "KILLED")
        times.append(time.perf_counter() - start)
    return times


def _liveml_write(runs: Path, staging: Path, records: list[dict]) -> list[float]:
    from liveml.tracking.index import RunIndex
    from liveml.tracking.runs import RunStore

    runs.mkdir(parents=True, exist_ok=True)
    RunIndex(runs).open().close()  # an indexed store: each save updates the index
    store = RunStore(runs)
    times = []
    for rec in records:
        start = time.perf_counter()
        store.save(dict(rec), files={"metrics.csv": staging / rec["run_id"] / "metrics.csv"})
        times.append(time.perf_counter() - start)
    return times


MLFLOW_QUERY = """
import json, sys, time
t0 = time.perf_counter()
import mlflow
t1 = time.perf_counter()
mlflow.set_tracking_uri(sys.argv[1])
runs = mlflow.search_runs(experiment_names=[{exp!r}], filter_string=sys.argv[2],
                          order_by=[sys.argv[3]], output_format="list")
t2 = time.perf_counter()
runs2 = mlflow.search_runs(experiment_names=[{exp!r}], filter_string=sys.argv[2],
                           order_by=[sys.argv[3]], output_format="list")
t3 = time.perf_counter()
key = sys.argv[4]
rows = [[r.info.run_name, r.data.metrics.get(key)] for r in runs]
print(json.dumps({{"import": t1 - t0, "call": t2 - t1, "warm": t3 - t2, "rows": rows}}))
"""

QUERIES = [
    (
        "defects, finished, by val/map_50 desc",
        ["compare", "--task", "defects", "--status", "finished", "--sort", "val/map_50", "--desc"],
        "tags.`liveml.task` = 'defects' AND attributes.status = 'FINISHED'",
        "metrics.`val/map_50` DESC",
        "val/map_50",
    ),
    (
        "all runs, by val/loss",
        ["compare", "--sort", "val/loss"],
        "",
        "metrics.`val/loss` ASC",
        "val/loss",
    ),
]


def _liveml_compare(root: Path, args: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one `liveml ARGS` process (the CLI's code path)."""
    env = {**os.environ, "LIVEML_ROOT": str(root)}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "liveml", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"liveml {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return wall, out.stdout


def _mlflow_search(root: Path, uri: str, flt: str, order: str, key: str) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", MLFLOW_QUERY.format(exp=EXPERIMENT), uri, flt, order, key],
        cwd=root,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"mlflow.search_runs failed:\n{out.stderr[-3000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def _same_answer(rows: list[dict], mlf: list, key: str) -> str:
    """Check both answers hold the same runs with the same sort-key sequence."""
    ids = [r["run"] for r in rows]
    if sorted(ids) != sorted(name for name, _ in mlf):
        return f"DIFFERENT runs ({len(ids)} vs {len(mlf)})"
    mine = [r.get(key) for r in rows]
    theirs = [v for _, v in mlf]
    if [round(v, 9) if v is not None else None for v in mine] != [
        round(v, 9) if v is not None else None for v in theirs
    ]:
        return "same runs, DIFFERENT order"
    return "same runs, same order"


def bench_store(base: Path, n: int, repeat: int) -> dict:
    from runstore_gen import write_store

    root = base / "store"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text("# tracking peers bench project\n")
    staging = base / "staging"
    write_store(staging, n)
    records = [json.loads((p / "run.json").read_text()) for p in sorted(staging.iterdir())]
    print(f"\n== (c) {n:,} realistic runs (bench/runstore_gen.py): write, then filter + sort")

    lw = _liveml_write(root / "runs", staging, records)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _prepare_mlflow_store(root)
    mw = _mlflow_write(uri, records)
    med = {
        "write_liveml_ms": statistics.median(lw) * 1e3,
        "write_mlflow_ms": statistics.median(mw) * 1e3,
    }
    print(
        f"write one run (median of {n:,}; total): liveml RunStore.save "
        f"{med['write_liveml_ms']:.1f} ms ({sum(lw):.1f} s); MLflow "
        f"{med['write_mlflow_ms']:.1f} ms ({sum(mw):.1f} s); "
        f"MLflow/liveml {med['write_mlflow_ms'] / med['write_liveml_ms']:.2f}x"
    )

    time.sleep(2.5)  # past the settle time of the runs folder's mtime (liveml.tracking.index)
    _liveml_compare(root, ["compare", "--limit", "1"])  # the first reader records the gate
    for label, args, flt, order, key in QUERIES:
        lt, mt = [], []
        for _ in range(repeat):
            wall, _ = _liveml_compare(root, args)  # the table, as printed
            lt.append(wall)
            mwall, mres = _mlflow_search(root, uri, flt, order, key)
            mt.append((mwall, mres["import"], mres["call"], mres["warm"]))
        rows = json.loads(_liveml_compare(root, [*args, "--json"])[1])
        same = _same_answer(rows, mres["rows"], key)
        lm = statistics.median(lt)
        mm = [statistics.median(x[i] for x in mt) for i in range(4)]
        med[label] = {"liveml": lm, "mlflow": mm}
        print(f"-- {label}: {len(rows)} runs; {same}")
        print(f"   liveml {' '.join(args)}: {lm:.3f} s (whole process)")
        print(
            f"   mlflow.search_runs: {mm[0]:.3f} s whole process ({mm[0] / lm:.2f}x liveml); "
            f"in it: import mlflow {mm[1]:.3f} s, first call {mm[2]:.3f} s, "
            f"second call {mm[3]:.3f} s ({mm[3] / lm:.2f}x liveml's whole process)"
        )
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--only", default="a,b,c", help="which parts to run (a,b,c)")
    parser.add_argument(
        "--kinds", default=",".join(LOGGING), help="which trackers (a) and (b) measure"
    )
    parser.add_argument("--dir", default=None, help="where the temp stores go (default: $TMPDIR)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), args.values)))
        return
    load = os.getloadavg()
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
        f"{os.cpu_count()} CPUs; medians of {args.repeat}"
    )
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="liveml-bench-peers-", dir=args.dir) as tmp:
        base = Path(tmp)
        if "a" in parts:
            bench_logging(base, args.values, args.repeat, args.kinds.split(","))
        if "b" in parts:
            bench_fixed(base, args.repeat, args.kinds.split(","))
        if "c" in parts:
            bench_store(base, args.runs, args.repeat)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
