"""Realistic run stores, written fast: N run folders shaped like `train(cfg)`'s records.

Used by bench/compare.py. Records are written with plain `json`/`os` (no liveml import, no
index): a store as rsync or an older liveml leaves it, which `liveml compare` must index.

What the store holds, in creation order (one run a minute):
- two tasks with their full resolved configs (defects ~55 flat keys, speech ~69);
- Hydra grid sweeps (8-48 jobs over lr x batch size x dropout), Optuna sweeps (continuous lr
  and weight decay, a third of the trials pruned), DVC experiments, reproductions, lone runs;
- a new commit every ~400 runs (some dirty), a new data version every ~3000 runs per task;
- final metrics per task; a metrics.csv per run (one row per epoch), and for 1 run in
  `per_step` a per-step log of 1,000 steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path

VOICES = [f"voice{i}" for i in range(67)]
COMMANDS = ["stop", "go", "yes", "no", "up", "down", "turn left", "turn right", "lights on"]
METRICS = {
    "defects": ("train/loss", "val/loss", "val/map", "val/map_50"),
    "speech": ("train/loss", "val/cer", "val/loss", "val/wer"),
}
BASE = 1_790_000_000  # 2026-09-21 UTC


def _trainer(epochs: int, threads: int) -> dict:
    return {
        "accelerator": "cpu",
        "devices": 1,
        "strategy": "auto",
        "num_nodes": 1,
        "max_epochs": epochs,
        "max_steps": -1,
        "precision": "32-true",
        "deterministic": True,
        "num_threads": threads,
        "num_workers": 0,
        "log_every_n_steps": 10,
        "limit_val_batches": 1.0,
    }


def _paths(task: str) -> dict:
    keys = ("data", "recipes", "model", "checkpoints", "export", "reference", "feedback")
    out = {k: f"data/{task}/{k}" for k in keys}
    out.update(metrics=f"metrics/{task}.json", plots=f"metrics/{task}_plots", runs="runs")
    return out


MONITOR = {
    "reference_size": 1000,
    "window": 200,
    "every": None,
    "alpha": 0.05,
    "permutations": 500,
    "consecutive": 3,
    "holdout": 0.3,
    "margin": 0.02,
}


def defects_config(p: dict) -> dict:
    return {
        "seed": p["seed"],
        "task": {
            "name": "defects",
            "classes": ["scratch", "crack", "spot"],
            "targets": {
                "map_50": {"min": 0.85, "max": None},
                "latency_p95_ms": {"min": None, "max": 50.0},
                "throughput_ips": {"min": 50.0, "max": None},
            },
        },
        "model": {
            "name": "fcos_tiny",
            "channels": p.get("channels", [24, 48, 96, 192]),
            "blocks": [1, 1, 1, 1],
            "fpn_channels": 32,
            "head_convs": p.get("head_convs", 2),
            "min_positives": 4,
            "score_thresh": 0.2,
            "nms_thresh": 0.5,
            "detections_per_img": 20,
            "lr": p["lr"],
            "weight_decay": p.get("weight_decay", 0.0001),
            "warmup_frac": 0.1,
            "batch_size": p.get("batch_size", 16),
        },
        "data": {
            "seed": 0,
            "image_size": 160,
            "n_train": p.get("n_train", 1200),
            "n_val": 200,
            "n_test": 300,
            "max_defects": 3,
            "brightness": p.get("brightness", 1.0),
            "brightness_jitter": 0.15,
            "scratch_length": 0.35,
            "blur": 0.6,
            "noise": 0.02,
            "glare": 0.3,
            "angle": 4.0,
        },
        "trainer": _trainer(p.get("epochs", 30), 2),
        "logger": {"mode": "offline", "project": "liveml", "entity": None, "dir": "wandb"},
        "paths": _paths("defects"),
        "monitor": MONITOR,
    }


def speech_config(p: dict) -> dict:
    return {
        "seed": p["seed"],
        "task": {
            "name": "speech",
            "classes": [],
            "targets": {
                "cer": {"min": None, "max": 0.05},
                "latency_p95_ms": {"min": None, "max": 100.0},
                "rtf": {"min": None, "max": 0.1},
            },
        },
        "model": {
            "name": "crnn_ctc",
            "n_mels": 64,
            "win_ms": 25.0,
            "hop_ms": 10.0,
            "channels": [32, 32],
            "time_strides": [2, 1],
            "rnn_hidden": p.get("hidden", 128),
            "rnn_layers": 2,
            "dropout": p.get("dropout", 0.1),
            "freq_masks": 2,
            "freq_mask_width": 10,
            "time_masks": 2,
            "time_mask_width": 12,
            "speed_perturb": [0.85, 1.15],
            "gain_db": 6.0,
            "echo_prob": 0.5,
            "vtlp": [0.9, 1.3],
            "lr": p["lr"],
            "weight_decay": p.get("weight_decay", 0.0001),
            "warmup_frac": 0.1,
            "batch_size": p.get("batch_size", 32),
        },
        "data": {
            "seed": 0,
            "sample_rate": 16000,
            "n_train": p.get("n_train", 2400),
            "n_val": 200,
            "n_test": 300,
            "max_digits": 4,
            "command_share": 0.4,
            "commands": COMMANDS,
            "voices": {"train": VOICES[:49], "val": VOICES[49:55], "test": VOICES[55:]},
            "conditions": {
                "rate": [140.0, 200.0],
                "pitch": [30.0, 70.0],
                "snr_db": p.get("snr_db", [15.0, 40.0]),
                "reverb": 0.3,
                "rt60": [0.15, 0.5],
                "gain_db": [-12.0, -1.0],
                "pad": [0.05, 0.3],
            },
        },
        "trainer": _trainer(p.get("epochs", 30), 2),
        "logger": {"mode": "offline", "project": "liveml", "entity": None, "dir": "wandb"},
        "paths": _paths("speech"),
        "monitor": MONITOR,
    }


def _sha(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _md5(*parts) -> str:
    return hashlib.md5(repr(parts).encode()).hexdigest()


def final_metrics(task: str, p: dict, rng: random.Random) -> dict:
    """Final metrics that depend on the hyperparameters (a sweep has a best run)."""
    lr_pen = abs(math.log10(p["lr"]) + 2.5) * 0.08
    noise = rng.gauss(0, 0.015)
    loss = 0.35 + lr_pen + abs(noise) * 3 + 0.02 * p.get("dropout", 0.1)
    if task == "defects":
        m50 = max(0.0, min(1.0, 0.93 - lr_pen - abs(noise)))
        return {
            "train/loss": loss,
            "val/loss": loss * 1.1,
            "val/map": m50 * 0.62,
            "val/map_50": m50,
        }
    cer = max(0.0, 0.03 + lr_pen * 0.4 + abs(noise))
    return {
        "train/loss": loss,
        "val/cer": cer,
        "val/loss": loss * 1.2,
        "val/wer": min(1.0, cer * 3),
    }


def _groups(n: int, rng: random.Random):
    """(kind, size, params generator) groups until `n` runs: what a team's store looks like."""
    made = 0
    while made < n:
        task = "defects" if rng.random() < 0.6 else "speech"
        roll = rng.random()
        if roll < 0.45:  # a Hydra grid sweep
            lrs = rng.sample([0.0005, 0.001, 0.002, 0.003, 0.004, 0.01], rng.choice([2, 3, 4]))
            bss = rng.sample([8, 16, 32], rng.choice([1, 2, 3]))
            drops = rng.sample([0.0, 0.1, 0.2, 0.3], rng.choice([1, 2, 4]))
            grid = [
                {"lr": lr, "batch_size": bs, "dropout": d}
                for lr in lrs
                for bs in bss
                for d in drops
            ]
            kind = "grid"
        elif roll < 0.75:  # an Optuna sweep: continuous values
            size = rng.choice([20, 50, 100, 200])
            grid = [
                {
                    "lr": 10 ** rng.uniform(-4, -1.5),
                    "weight_decay": 10 ** rng.uniform(-6, -2),
                    "dropout": round(rng.uniform(0, 0.5), 3),
                }
                for _ in range(size)
            ]
            kind = "optuna"
        elif roll < 0.9:  # DVC experiments queued from one baseline
            grid = [{"lr": rng.choice([0.001, 0.003, 0.01])} for _ in range(rng.randint(2, 8))]
            kind = "dvc"
        elif roll < 0.95:
            grid = [{"lr": 0.004 if task == "defects" else 0.003}] * rng.randint(1, 3)
            kind = "reproduce"
        else:
            grid = [{"lr": rng.choice([0.001, 0.003, 0.004])}]
            kind = "lone"
        grid = grid[: n - made]
        yield task, kind, grid
        made += len(grid)


def write_store(runs_dir: Path, n: int, *, seed: int = 0, per_step: int = 100) -> int:
    """Write `n` run folders into `runs_dir`; returns how many have a per-step log."""
    rng = random.Random(seed)
    runs_dir.mkdir(parents=True, exist_ok=True)
    i = 0
    stepped = 0
    for task, kind, grid in _groups(n, rng):
        t_sweep = BASE + 60 * i
        stamp = _stamp(t_sweep).replace("-", "_", 1)
        for job, p in enumerate(grid):
            p = {"seed": 0, **p}
            commit = _sha("commit", i // 400)[:40]
            dirty = (i // 400) % 5 == 4
            data_hash = _md5("data", task, i // 3000) + ".dir"
            if i // 3000 % 2:
                p["n_train"] = 1600 if task == "defects" else 3200
            cfg = (defects_config if task == "defects" else speech_config)(p)
            cfg_view = {k: v for k, v in cfg.items() if k not in ("paths", "logger")}
            fp = _sha(commit, dirty, cfg_view, data_hash, kind == "reproduce" or i)
            now = BASE + 60 * i
            run_id = f"{_stamp(now)}-{fp[:8]}"
            metrics = final_metrics(task, p, rng)
            status = "finished"
            if kind == "optuna" and rng.random() < 0.33:
                status = "pruned"
                metrics = {k: v for k, v in metrics.items() if k != "val/map_50"}
            sweep = None
            if kind in ("grid", "optuna"):
                varied = ("lr", "batch_size", "dropout", "weight_decay")
                sweep = {
                    "name": f"multirun/{stamp}",
                    "kind": "hydra",
                    "job": job,
                    "overrides": {f"model.{k}": str(p[k]) for k in varied if k in p},
                    "experiment": None,
                }
            elif kind == "dvc":
                sweep = {
                    "name": f"dvc:{commit[:7]}",
                    "kind": "dvc",
                    "job": None,
                    "overrides": {},
                    "experiment": f"exp-{_sha(i)[:5]}",
                }
            elif kind == "reproduce":
                sweep = {
                    "name": f"reproduce/{_stamp(t_sweep)}-{fp[:8]}",
                    "kind": "reproduce",
                    "job": None,
                    "overrides": {},
                    "experiment": None,
                }
            epochs = cfg["trainer"]["max_epochs"] if status == "finished" else rng.randint(3, 12)
            steps_per_epoch = cfg["data"]["n_train"] // cfg["model"]["batch_size"]
            record = {
                "run_id": run_id,
                "task": task,
                "created": _iso(now),
                "fingerprint": fp,
                "fingerprint_parts": {
                    "code": _sha(commit, dirty),
                    "config": _sha(cfg_view),
                    "data": _sha(data_hash),
                },
                "code": {
                    "commit": commit,
                    "dirty": dirty,
                    "diff_sha256": _sha("diff", i // 400) if dirty else None,
                },
                "config": cfg,
                "data": {f"data/{task}/raw": data_hash},
                "environment": {
                    "python": "3.11.7",
                    "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
                    "torch": "2.11.0",
                    "torchvision": "0.26.0",
                    "torchaudio": "2.11.0",
                    "lightning": "2.6.6",
                    "numpy": "2.3.1",
                    "lock_sha256": _sha("lock", i // 2000),
                },
                "seed": 0,
                "metrics": dict(sorted(metrics.items())),
                "weights_sha256": _sha("w", i),
                "wandb": {"id": _sha("wb", i)[:8], "mode": "offline", "dir": "wandb/offline-run"},
                "resumed_from": None,
                "sweep": sweep,
                "train_seconds": round(rng.uniform(60, 900), 2),
                "status": status,
                "world_size": 1,
                "epochs": epochs,
                "global_step": epochs * steps_per_epoch,
            }
            folder = runs_dir / run_id
            os.mkdir(folder)
            with open(folder / "run.json", "w") as f:
                f.write(json.dumps(record, indent=2) + "\n")
            full = per_step and i % per_step == 0
            stepped += bool(full)
            _write_log(folder / "metrics.csv", task, metrics, epochs, steps_per_epoch, full)
            i += 1
    return stepped


def _write_log(path: Path, task: str, final: dict, epochs: int, per_epoch: int, full: bool):
    keys = METRICS[task]
    lines = ["step,epoch," + ",".join(keys)]
    if full:  # a per-step log of 1,000 steps: train loss each step, val each epoch
        per_epoch = max(1, 1000 // max(epochs, 1))
        total = 1000
    else:
        total = epochs
    for s in range(total):
        epoch = s // per_epoch if full else s
        frac = (s + 1) / total
        row = [final[k] * (1 + 2 * (1 - frac)) if k in final else "" for k in keys]
        if full and (s + 1) % per_epoch:
            row = [row[0], *([""] * (len(keys) - 1))]
        step = s if full else (s + 1) * per_epoch - 1
        lines.append(f"{step},{epoch}," + ",".join(f"{v:.6g}" if v != "" else "" for v in row))
    path.write_text("\n".join(lines) + "\n")


def _stamp(t: float) -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
