"""Speed of `liveml compare` on a big run store: 200 runs x 1,000 logged steps (full speech
configs, 4 metrics, Hydra sweeps and DVC experiments), built in a temp project.

Times the whole `liveml compare` process (median of N): the table (target <= 2 s), sorted,
one sweep, JSON, a diff, and the HTML report (which also reads every metrics.csv).

    .venv/bin/python bench/compare.py [--runs 200] [--steps 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from liveml.tracking.runs import RunStore

TARGET_TABLE_S = 2.0
METRICS = ("train/loss", "val/cer", "val/loss", "val/wer")
VOICES = [f"voice{i}" for i in range(49)]
COMMANDS = ["stop", "go", "yes", "no", "up", "down", "turn left", "turn right", "lights on"]


def speech_config(lr: float, dropout: float, hidden: int, snr: list[float], seed: int) -> dict:
    """A resolved speech config shaped like the real ones (same groups, similar size)."""
    return {
        "seed": seed,
        "task": {
            "name": "speech",
            "classes": [],
            "targets": {"cer": {"min": None, "max": 0.05}, "rtf": {"min": None, "max": 0.1}},
        },
        "model": {
            "name": "crnn_ctc",
            "n_mels": 64,
            "win_ms": 25.0,
            "hop_ms": 10.0,
            "channels": [32, 32],
            "time_strides": [2, 1],
            "rnn_hidden": hidden,
            "rnn_layers": 2,
            "dropout": dropout,
            "freq_masks": 2,
            "freq_mask_width": 10,
            "time_masks": 2,
            "time_mask_width": 12,
            "speed_perturb": [0.85, 1.15],
            "gain_db": 6.0,
            "echo_prob": 0.5,
            "vtlp": [0.9, 1.3],
            "lr": lr,
            "weight_decay": 0.0001,
            "warmup_frac": 0.1,
            "batch_size": 32,
        },
        "data": {
            "seed": 0,
            "sample_rate": 16000,
            "n_train": 2400,
            "n_val": 200,
            "n_test": 300,
            "max_digits": 4,
            "command_share": 0.4,
            "commands": COMMANDS,
            "voices": {"train": VOICES[:40], "val": VOICES[40:45], "test": VOICES[45:]},
            "conditions": {"rate": [140.0, 200.0], "snr_db": snr, "reverb": 0.3},
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 20,
            "max_steps": -1,
            "precision": "32-true",
            "deterministic": True,
            "num_threads": 2,
            "num_workers": 0,
            "log_every_n_steps": 1,
            "limit_val_batches": 1.0,
        },
        "logger": {"mode": "offline", "project": "liveml", "entity": None, "dir": "wandb"},
        "paths": {"data": "data/speech/raw", "runs": "runs", "model": "data/speech/model"},
    }


def sweep_of(i: int) -> dict | None:
    """Runs 0-159: four Hydra sweeps of 40 jobs; 160-179: DVC experiments; the rest: none."""
    if i < 160:
        return {
            "name": f"sweeps/2026-11-25_1{i // 40}-00-00",
            "kind": "hydra",
            "job": i % 40,
            "overrides": {"model.lr": "..."},
            "experiment": None,
        }
    if i < 180:
        return {
            "name": "dvc:0709d26",
            "kind": "dvc",
            "job": None,
            "overrides": {"tasks.speech.model.lr": "..."},
            "experiment": f"exp-{i}",
        }
    return None


def write_metrics(path: Path, steps: int, rng: random.Random, quality: float) -> dict:
    """A metrics.csv of `steps` rows (train loss each step, val metrics every 50); returns the
    final values."""
    lines = ["step,epoch," + ",".join(METRICS)]
    final = {}
    for step in range(steps):
        loss = 3.0 * math.exp(-step / (steps / 4)) + quality + rng.random() * 0.05
        val = step % 50 == 49
        cer = quality * (1 + 5 * math.exp(-step / (steps / 5)))
        row = [loss, *((cer, loss * 0.9, cer * 3) if val else ("", "", ""))]
        lines.append(f"{step},{step // 50}," + ",".join(f"{v:.6g}" if v != "" else "" for v in row))
        final = {"train/loss": loss, "val/cer": cer, "val/loss": loss * 0.9, "val/wer": cer * 3}
    path.write_text("\n".join(lines) + "\n")
    return final


def build_store(root: Path, runs: int, steps: int) -> RunStore:
    """A project at `root` (conf/config.yaml marks it) with `runs` saved runs."""
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text("# liveml compare bench project\n")
    store = RunStore(root / "runs")
    rng = random.Random(0)
    csv = root / "metrics.tmp.csv"
    for i in range(runs):
        lr = rng.choice([0.001, 0.003, 0.01])
        dropout = rng.choice([0.0, 0.1, 0.2])
        hidden = rng.choice([64, 128, 256])
        quality = 0.002 + lr * dropout + 0.01 / hidden * 10
        final = write_metrics(csv, steps, rng, quality)
        fp = f"{i:08x}" * 8
        record = {
            "run_id": time.strftime("%Y%m%d-%H%M%S", time.gmtime(1_790_000_000 + 60 * i))
            + f"-{fp[:8]}",
            "task": "speech",
            "created": "2026-11-25T10:00:00Z",
            "fingerprint": fp,
            "fingerprint_parts": {"code": "c" * 64, "config": fp, "data": "d" * 64},
            "code": {
                "commit": ("0709d26d4ec5" if i < 100 else "2fecc79a8b1e") + "0" * 28,
                "dirty": i % 25 == 0,
                "diff_sha256": "e" * 64 if i % 25 == 0 else None,
            },
            "config": speech_config(lr, dropout, hidden, [15.0, 40.0 - i % 2 * 10], seed=0),
            "data": {"data/speech/raw": "a3ec42ab1cdc24e099607d46061e82bb.dir"},
            "environment": {"python": "3.11.7", "torch": "2.11.0", "lightning": "2.6.6"},
            "seed": 0,
            "metrics": final,
            "weights_sha256": "f" * 64,
            "wandb": {"id": f"w{i}", "mode": "offline", "dir": "wandb"},
            "resumed_from": None,
            "sweep": sweep_of(i),
            "status": "pruned" if i % 17 == 0 else "finished",
            "train_seconds": 421.5,
            "epochs": steps // 50,
            "global_step": steps,
        }
        store.save(record, files={"metrics.csv": csv})
    csv.unlink()
    return store


def timed(root: Path, args: list[str], repeat: int) -> list[float]:
    env = {**os.environ, "LIVEML_ROOT": str(root)}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "liveml", *args],
            cwd=root,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liveml-bench-compare-") as tmp:
        root = Path(tmp) / "proj"
        start = time.perf_counter()
        store = build_store(root, args.runs, args.steps)
        ids = store.ids()
        print(f"built {len(ids)} runs x {args.steps} steps in {time.perf_counter() - start:.1f} s")
        report = root / "report.html"
        cases = [
            ("python startup (baseline)", None, []),
            ("liveml compare (table)", TARGET_TABLE_S, ["compare"]),
            ("--sort val/cer --desc", TARGET_TABLE_S, ["compare", "--sort", "val/cer", "--desc"]),
            ("--sweep last", TARGET_TABLE_S, ["compare", "--sweep", "last"]),
            ("--json", TARGET_TABLE_S, ["compare", "--json"]),
            ("--diff A B", None, ["compare", "--diff", ids[0], ids[-1]]),
            ("--html (report)", None, ["compare", "--html", str(report)]),
        ]
        print(f"{'command':28s} {'median':>8s} {'max':>8s}  target")
        for name, target, cmd in cases:
            if cmd:
                t = timed(root, cmd, args.repeat)
            else:
                t = []
                for _ in range(args.repeat):
                    begin = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "pass"], check=True)
                    t.append(time.perf_counter() - begin)
            goal = f"<= {target:.0f} s" if target else ""
            print(f"{name:28s} {statistics.median(t):7.3f}s {max(t):7.3f}s  {goal}")
        print(f"report size {report.stat().st_size / 2**20:.1f} MiB ({args.repeat} runs each)")


if __name__ == "__main__":
    main()
