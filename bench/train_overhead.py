"""What liveml adds to a training run: `train(cfg)` vs a bare Lightning `Trainer.fit` of the same
module vs a plain PyTorch loop over the same module, at 50, 150 and 750 optimizer steps.

Each run is its own fresh Python process (as `python -m liveml.training` or a user's script
is): the wall time is the whole process, imports included. `fit` is the time in the training
loop itself (Trainer.fit, the plain loop, or the record's train_seconds); `fixed` = wall - fit is
a run's fixed cost. All three use the task's module and data module through the task contract,
the same config (composed the same way), the same data, seed, thread count and number of steps;
validation is off everywhere (it is work, not overhead). Bare Lightning is `L.Trainer` with
Lightning's defaults (its own checkpoint per epoch and default logger) plus the same numerics
settings; liveml adds lineage (git, DVC data hashes), W&B offline, the CSV log, hashed epoch
checkpoints and the run record.

The liveml run also prints where its fixed cost goes (config check, lineage, W&B start/finish
and how long the training waited for them, checkpoint writes, the model folder and run store).

Targets (issue 15): train(cfg) / bare Lightning <= 1.03 at 750 steps (the default here) and
<= 1.10 at 150; liveml's fixed cost <= bare Lightning's + 2 s.

    .venv/bin/python bench/train_overhead.py [--steps 50,150,750] [--repeat 3] [--threads 1]
                                             [--full-model]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

BATCH = 16
N_TRAIN = 400  # 25 steps per epoch at batch 16
# A small detector (steps of ~0.1 s on 2 cores): the fixed cost weighs the most. --full-model
# trains the project's default model instead (steps of seconds).
SMALL = [
    "data.image_size=64",
    "model.channels=[8,16,16,32]",
    "model.fpn_channels=32",
    "model.head_convs=1",
]


def overrides(epochs: int, full: bool, tmp: Path, threads: int = 1) -> list[str]:
    return [
        *([] if full else SMALL),
        f"data.n_train={N_TRAIN}",
        "data.n_val=16",
        "data.n_test=16",
        f"model.batch_size={BATCH}",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_val_batches=0",
        f"trainer.num_threads={threads}",
        f"logger.dir={tmp / 'wandb'}",
    ]


# --- the three runs, each in its own process (`--child KIND`) ------------------------------


def child(kind: str, project_dir: Path, over: list[str]) -> dict:
    began = time.perf_counter()
    import lightning as L
    import torch

    imports = time.perf_counter() - began
    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.tasks import get_task

    project = Project(project_dir)
    cfg = compose(over, project)
    torch.set_num_threads(cfg.trainer.num_threads)
    data_dir = project.path(cfg.paths.data)
    out = {"kind": kind, "imports": imports}
    if kind == "liveml":
        out.update(liveml_run(cfg, project))
        return out
    task = get_task(cfg.task.name)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.use_deterministic_algorithms(True)
    module, dm = task.module(cfg), task.datamodule(cfg, data_dir)
    if kind == "lightning":
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            max_epochs=cfg.trainer.max_epochs,
            precision=cfg.trainer.precision,
            deterministic=cfg.trainer.deterministic,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            limit_val_batches=cfg.trainer.limit_val_batches,
            default_root_dir=str(project_dir / "lightning"),
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        out["fit"] = time.perf_counter() - start
        out["steps"] = int(trainer.global_step)
    else:
        out.update(plain_loop(cfg, module, dm))
    return out


def plain_loop(cfg, module, dm) -> dict:
    """The module's own training_step in a hand-written loop: same loader, model, AdamW
    one-cycle recipe (liveml.training.optim), no Lightning Trainer."""
    import warnings

    from liveml.training.optim import adamw_one_cycle

    dm.setup("fit")
    loader = dm.train_dataloader()
    m = cfg.model
    total = len(loader) * cfg.trainer.max_epochs
    opt = adamw_one_cycle(
        module.model.parameters(),
        lr=m.lr,
        weight_decay=m.weight_decay,
        warmup_frac=m.warmup_frac,
        total_steps=total,
    )
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    module.train()
    steps = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer: a no-op that warns
        for epoch in range(cfg.trainer.max_epochs):
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            for i, batch in enumerate(loader):
                out = module.training_step(batch, i)
                loss = out["loss"] if isinstance(out, dict) else out
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                steps += 1
    return {"fit": time.perf_counter() - start, "steps": steps}


def liveml_run(cfg, project) -> dict:
    """train(cfg), with timers around the parts of its fixed cost."""
    import liveml.core.config as config_mod
    import liveml.tracking.lineage as lineage
    import liveml.tracking.loggers as loggers
    import liveml.training.run as run
    from liveml.tracking.runs import RunStore

    spent: dict[str, float] = {}

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, name, wrapper)

    timed(config_mod, "check", "config check")
    timed(lineage, "code_state", "lineage: git code state")
    timed(lineage, "data_hashes", "lineage: data hashes")
    timed(lineage, "environment", "lineage: environment")
    timed(loggers, "open_tracking", "tracking: open (W&B started in background)")
    timed(loggers.Tracking, "info", "W&B: waited for its start")
    timed(loggers.Tracking, "close", "W&B: waited for its finish")
    timed(run, "save_checkpoint", "checkpoint writes (+ sha256 sidecars)")
    timed(RunStore, "save", "run store: record + metrics.csv")
    timed(lineage, "weights_sha256", "weights sha256")
    seen = {}
    original_init = loggers.BackgroundWandb.__init__

    def keep(self, *a, **k):
        original_init(self, *a, **k)
        seen["wandb"] = self

    loggers.BackgroundWandb.__init__ = keep
    start = time.perf_counter()
    record = run.train(cfg, project=project, resume=False)
    wall = time.perf_counter() - start
    if "wandb" in seen:
        for k, v in seen["wandb"].seconds.items():
            spent[f"(in background: W&B {k})"] = v or 0.0
    return {
        "fit": record["train_seconds"],
        "train_call": wall,
        "steps": record["global_step"],
        "breakdown": spent,
    }


# --- the parent ---------------------------------------------------------------------------


def run_child(kind: str, project_dir: Path, over: list[str]) -> dict:
    import resource

    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--project", str(project_dir), "--", *over],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{kind} run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["fixed"] = wall - result["fit"]
    return result


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its fit, breakdown...), with the median CPU time."""
    import statistics

    ordered = sorted(runs, key=lambda r: r["wall"])
    mid = dict(ordered[(len(ordered) - 1) // 2])
    mid["cpu"] = statistics.median(r["cpu"] for r in runs)
    mid["walls"] = [round(r["wall"], 1) for r in runs]
    return mid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50,150,750", help="comma-separated step counts")
    parser.add_argument("--full-model", action="store_true", help="the default detector")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.project), args.rest)))
        return

    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.tasks import get_task

    repo = Project.find(Path(__file__).resolve().parent)
    per_epoch = N_TRAIN // BATCH
    steps = [int(s) for s in args.steps.split(",")]
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"model: {'default detector' if args.full_model else 'small detector ' + str(SMALL)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="liveml-bench-overhead-") as tmp:
        tmp = Path(tmp)
        # A project folder of its own: conf/ and the lock file from the repo, outputs under tmp.
        (tmp / "conf").symlink_to(repo.conf_dir)
        (tmp / "requirements.lock").symlink_to(repo.lock_file)
        project = Project(tmp)
        cfg = compose(overrides(1, args.full_model, tmp), project)
        get_task(cfg.task.name).generate(cfg, project.path(cfg.paths.data))
        kinds = ["plain", "lightning", "liveml"]
        for n in steps:
            epochs = max(1, n // per_epoch)
            over = overrides(epochs, args.full_model, tmp, args.threads)
            runs: dict[str, list[dict]] = {k: [] for k in kinds}
            for i in range(args.repeat):  # rotated, so no kind always runs first
                for kind in kinds[i % 3 :] + kinds[: i % 3]:
                    runs[kind].append(run_child(kind, tmp, over))
            results = {k: median_run(v) for k, v in runs.items()}
            rows.append((n, results))
            report(n, results)
    print(f"\nsummary: median of {args.repeat} runs each (wall: whole process; fixed = wall - fit;")
    print("cpu = the process's user+sys time, children included: steadier than wall when shared)")
    print(
        f"{'steps':>5} {'plain':>8} {'lightning':>9} {'liveml':>8} {'liveml/L':>8} "
        f"{'cpu ratio':>9} {'liveml/plain':>12} {'fixed L':>8} {'fixed liveml':>12} {'extra':>6}"
    )
    for n, r in rows:
        p, lt, lv = r["plain"], r["lightning"], r["liveml"]
        print(
            f"{n:5d} {p['wall']:7.1f}s {lt['wall']:8.1f}s {lv['wall']:7.1f}s "
            f"{lv['wall'] / lt['wall']:8.3f} {lv['cpu'] / lt['cpu']:9.3f} "
            f"{lv['wall'] / p['wall']:12.3f} "
            f"{lt['fixed']:7.1f}s {lv['fixed']:11.1f}s {lv['fixed'] - lt['fixed']:5.1f}s"
        )
    print("targets: liveml/L <= 1.03 at 750 steps, <= 1.10 at 150; extra fixed cost <= 2 s")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def report(n: int, results: dict) -> None:
    print(f"\n== {n} steps")
    for kind, r in results.items():
        print(
            f"  {kind:9s} steps {r['steps']:4d}  wall {r['wall']:7.2f} s {r['walls']}  "
            f"fit {r['fit']:7.2f} s  fixed {r['fixed']:6.2f} s  cpu {r['cpu']:7.2f} s  "
            f"(imports of torch+lightning {r['imports']:.2f} s)"
        )
    live = results["liveml"]
    print(f"  liveml train(cfg) call {live['train_call']:.2f} s; fixed cost inside it:")
    for label, seconds in live["breakdown"].items():
        print(f"    {label:45s} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
