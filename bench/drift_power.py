"""Power and false alarms of the drift monitor, and the accuracy each drift costs.

For each task, the reference is built as the `<task>_reference` stage builds it for a model
not yet retrained on feedback (fresh draws of the training recipe from stream 0, profiled by
the trained model in data/<task>/model), in memory; nothing is written under data/. Pools of
profiled inputs come from other streams: one in-distribution pool and one pool per (scenario,
strength) of the task's `scenarios`. Windows of 50/200/1000 inputs are random subsets of a pool
(no repeats inside a window); each goes through `monitoring.drift.compare` with the configured
alpha and permutations, as `liveml monitor` does.

  detect@N      share of drifted windows of N inputs that the monitor flags (report["drift"])
  false alarms  the same share on in-distribution windows (target <= 5% per window)
  flagged       which tests fired, as a share of windows (at the configured window, 200)
  conf-drop     share of windows whose one-sided confidence-drop test fired (not part of
                report["drift"]; a label-free hint that predictions got worse)
  metric        the model's headline metric (defects map_50, speech cer) on a labelled set of
                the recipe vs the same set drifted: which drift actually matters

Speed: median of 5 `compare(reference, window of 1000)`, and feature extraction per input
(input features and the model's view, in a 1-thread worker) reported separately.

Profiling dominates the run time; it runs in `--workers` processes (1 torch thread each).
Every pool's chunk k is drawn from stream 1 + k, under every scenario and strength, so the
drifted pools show the same scenes/utterances as the in-distribution pool (paired).

    .venv/bin/python bench/drift_power.py [--task defects|speech|all] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

SIZES = (50, 200, 1000)
# Graded strengths, from undetected to detected; the two targets are darker 0.3 and
# noisier 10 (dB). Meanings: the task's `scenarios` (its Task class).
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "defects": {
        "darker": (0.02, 0.05, 0.1, 0.3, 0.5),
        "longer_scratches": (0.1, 0.25, 0.5, 1.0),
        "blur": (0.05, 0.1, 0.33, 1.0),
    },
    "speech": {
        "noisier": (1.0, 3.0, 5.0, 10.0, 20.0),
        "unseen_voices": (0.25, 0.5, 1.0),
        "faster": (0.05, 0.1, 0.2, 0.4),
    },
}
QUICK_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "defects": {"darker": (0.3,), "longer_scratches": (1.0,), "blur": (1.0,)},
    "speech": {"noisier": (10.0,), "unseen_voices": (1.0,), "faster": (0.4,)},
}
TARGETS = {"defects": ("darker", 0.3), "speech": ("noisier", 10.0)}
TARGET_FALSE_ALARMS = 0.05
TARGET_DETECTION = 0.95
TARGET_COMPARE_S = 1.0
DETECTION_AT = 200  # the window size of the detection target (and of the "flagged" column)
CHUNK = 100  # inputs per profiling job: chunk k of every pool is stream 1 + k
SPEED_REPEATS = 5

# Per worker process: (cfg, module) per task, loaded once.
_LOADED: dict[str, tuple[Any, Any]] = {}


# --- worker jobs ------------------------------------------------------------------------------


def _init_worker() -> None:
    # Before numpy/torch load in this process: one thread each, workers share the cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def _loaded(task: str) -> tuple[Any, Any]:
    if task not in _LOADED:
        from liveml.core.config import load_params
        from liveml.core.project import Project
        from liveml.training.run import load_trained

        cfg = load_params(task)
        module, _ = load_trained(Project.find().path(cfg.paths.model))
        _LOADED[task] = (cfg, module)
    return _LOADED[task]


def profile_chunk(task: str, scenario: str | None, strength: float, stream: int, n: int):
    """(Profile, timing) of `n` fresh inputs of stream `stream`, drifted as asked; timing adds
    the generator's draw time per input (not part of the monitor's cost)."""
    from liveml.monitoring.monitor import draw_inputs, profile_inputs
    from liveml.tasks import get_task

    cfg, module = _loaded(task)
    contract = get_task(task)
    start = time.perf_counter()
    inputs = draw_inputs(contract, cfg, n, stream=stream, scenario=scenario, strength=strength)
    draw_ms = 1000 * (time.perf_counter() - start) / max(n, 1)
    profile, timing = profile_inputs(contract, module, inputs)
    return profile, {**timing, "draw_ms_per_input": round(draw_ms, 3), "n": n}


def window_results(reference, pool, size: int, windows: list[tuple[int, Any]], monitor: dict):
    """compare() of each (seed, row indices) window of `pool` against `reference`, reduced to
    what the tables need: drift, the flagged tests, the top one, the confidence-drop flag."""
    from liveml.monitoring.drift import compare

    out = []
    for seed, rows in windows:
        report = compare(
            reference,
            pool.take(rows),
            alpha=monitor["alpha"],
            permutations=monitor["permutations"],
            seed=seed,
        )
        flagged = report["drifted"]
        top = min(flagged, key=lambda f: report["features"][f]["p_adjusted"]) if flagged else None
        conf = report["confidence"]
        out.append(
            {
                "drift": report["drift"],
                "flagged": flagged,
                "top": top,
                "confidence_drop": bool(conf and conf["drifted"]),
            }
        )
    return size, out


def labelled_quality(task: str, scenario: str | None, strength: float, n_test: int) -> dict:
    """The headline metric on `n_test` labelled test inputs of the recipe, drifted as asked,
    written by the task's own generator into a temp folder."""
    import dataclasses

    from omegaconf import OmegaConf

    from liveml.data.feedback import score
    from liveml.tasks import get_task

    cfg, module = _loaded(task)
    contract = get_task(task)
    if task == "speech":
        recipe = _speech_recipe(cfg.data, scenario, strength)
    elif scenario is None or strength == 0:
        recipe = cfg.data
    else:
        recipe = contract.drifted_recipe(cfg.data, scenario, strength)
    if dataclasses.is_dataclass(recipe):
        data = dataclasses.asdict(recipe)
    else:
        data = OmegaConf.to_container(recipe, resolve=True)
    # Only the test split is scored: nothing in train/val.
    data.update(n_train=0, n_val=0, n_test=int(n_test))
    labelled = OmegaConf.merge(cfg, {"data": data})
    with tempfile.TemporaryDirectory(prefix="liveml-drift-power-") as tmp:
        contract.generate(labelled, tmp)
        return score(contract, labelled, module, tmp, split="test")


def _speech_recipe(data_cfg: Any, scenario: str | None, strength: float):
    """A speech recipe whose generated TEST split is spoken like the monitor's inputs.

    draw_inputs speaks with the TRAIN voices (the deployment the monitor watches), but the
    generator's test split always uses `voices.test`, and it refuses recipes where a test voice
    also trains (which unseen_voices' recipe does: it puts test voices into `voices.train`).
    So the voice lists are relabelled, nothing is trained on: `voices.test` = the training
    voices (in-distribution, noisier, faster) or the training/held-out mix that unseen_voices
    draws (its strength = share of held-out voices); `voices.train` = the held-out validation
    voices and `voices.val` = the held-out test voices, which only keep the generator's
    disjointness check honest (n_train = n_val = 0). Every labelled set then differs from the
    in-distribution one in the drifted condition only, and unseen_voices at 1.0 is the
    model's own test-speaker condition.
    """
    from liveml.tasks.speech.monitoring import drifted_recipe, voice_mix

    unseen = scenario == "unseen_voices"
    recipe = drifted_recipe(data_cfg, None if unseen else scenario, 0.0 if unseen else strength)
    seen, val, held_out = (list(recipe.voices[s]) for s in ("train", "val", "test"))
    recipe.voices.test = voice_mix(seen, held_out, strength) if unseen and strength > 0 else seen
    recipe.voices.train = val
    recipe.voices.val = held_out
    return recipe


# --- the benchmark ---------------------------------------------------------------------------


def _chunks(n: int) -> list[tuple[int, int]]:
    """(stream, count) chunks of a pool of `n` inputs; chunk k comes from stream 1 + k."""
    return [(1 + k, min(CHUNK, n - k * CHUNK)) for k in range((n + CHUNK - 1) // CHUNK)]


def _windows(pool_n: int, size: int, count: int, key: tuple[int, ...]) -> list[tuple[int, Any]]:
    import numpy as np

    rng = np.random.default_rng([20240611, *key, size])
    return [(seed, rng.choice(pool_n, size, replace=False)) for seed in range(count)]


def _rate(results: list[dict], field: str = "drift") -> dict:
    from scipy.stats import binomtest

    k, n = sum(bool(r[field]) for r in results), len(results)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95) if n else None
    return {
        "k": k,
        "n": n,
        "rate": k / n if n else None,
        "ci95": [ci.low, ci.high] if ci else None,
    }


def _shares(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    tops: dict[str, int] = {}
    for r in results:
        for name in r["flagged"]:
            counts[name] = counts.get(name, 0) + 1
        if r["top"]:
            tops[r["top"]] = tops.get(r["top"], 0) + 1
    n = max(len(results), 1)
    return {
        "flagged": {k: v / n for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
        "top": {k: v / n for k, v in sorted(tops.items(), key=lambda kv: -kv[1])},
    }


def run_task(task: str, args, executor: ProcessPoolExecutor) -> dict:
    """Every figure of one task (see the module docstring)."""
    import numpy as np

    from liveml.core.config import load_params
    from liveml.monitoring.drift import Profile, compare
    from liveml.monitoring.monitor import REFERENCE_STREAM

    started = time.perf_counter()
    cfg = load_params(task)
    monitor = {"alpha": float(cfg.monitor.alpha), "permutations": int(cfg.monitor.permutations)}
    reference_n = args.reference_size or int(cfg.monitor.reference_size)
    grid = (QUICK_GRIDS if args.quick else GRIDS)[task]
    cases: list[tuple[str | None, float]] = [(None, 0.0)]
    cases += [(s, v) for s, strengths in grid.items() for v in strengths]
    pool_n = {c: (args.id_pool if c[0] is None else args.pool) for c in cases}

    # Everything slow goes to the workers at once: reference first (the longest single job).
    ref_job = executor.submit(profile_chunk, task, None, 0.0, REFERENCE_STREAM, reference_n)
    chunk_jobs: dict[tuple, list[Future]] = {
        c: [executor.submit(profile_chunk, task, *c, s, n) for s, n in _chunks(pool_n[c])]
        for c in cases
    }
    quality_jobs = {c: executor.submit(labelled_quality, task, *c, args.labelled) for c in cases}

    reference, _ = ref_job.result()
    pools, timings = {}, []
    for c, jobs in chunk_jobs.items():
        parts = [j.result() for j in jobs]
        pools[c] = Profile.concat([p for p, _ in parts])
        if c[0] is None:
            timings = [t for _, t in parts]
    profiled_s = time.perf_counter() - started

    compare_jobs = []
    for i, c in enumerate(cases):
        for size in SIZES:
            if size > len(pools[c]):
                continue
            count = (args.id_windows if size < 1000 else args.id_windows_1000) if i == 0 else 0
            count = count or args.windows
            wins = _windows(len(pools[c]), size, count, (i,))
            compare_jobs.append(
                (c, executor.submit(window_results, reference, pools[c], size, wins, monitor))
            )
    results: dict[tuple, dict[int, list[dict]]] = {c: {} for c in cases}
    for c, job in compare_jobs:
        size, out = job.result()
        results[c][size] = out
    quality = {c: job.result() for c, job in quality_jobs.items()}

    # Speed in this process (default BLAS threads), on an in-distribution window of 1000.
    speed_window = pools[cases[0]].take(np.arange(min(1000, len(pools[cases[0]]))))
    seconds = []
    for seed in range(SPEED_REPEATS):
        start = time.perf_counter()
        compare(reference, speed_window, seed=seed, **monitor)
        seconds.append(time.perf_counter() - start)

    n_in = sum(t["n"] for t in timings)
    per_input = {
        key: sum(t[key] * t["n"] for t in timings) / n_in
        for key in ("features_ms_per_input", "model_view_ms_per_input", "draw_ms_per_input")
    }
    rows = []
    for c in cases:
        row = {
            "scenario": c[0] or "in-distribution",
            "strength": c[1],
            "pool": len(pools[c]),
            "windows": {},
            "quality": quality[c],
        }
        for size, out in results[c].items():
            row["windows"][str(size)] = {
                "drift": _rate(out),
                "confidence_drop": _rate(out, "confidence_drop"),
                **_shares(out),
            }
        rows.append(row)
    return {
        "task": task,
        "monitor": monitor,
        "reference_size": len(reference),
        "reference_stream": REFERENCE_STREAM,
        "labelled_n": args.labelled,
        "rows": rows,
        "speed": {
            "compare_window_1000_s": statistics.median(seconds),
            "compare_runs_s": seconds,
            "window": len(speed_window),
            "tests": len(reference.numeric) + len(reference.categorical) + 1,
            **{k: round(v, 3) for k, v in per_input.items()},
            "extraction_inputs": n_in,
        },
        "profiling_s": round(profiled_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }


# --- output ------------------------------------------------------------------------------------


def _pct(rate: dict | None) -> str:
    return "-" if not rate or rate["rate"] is None else f"{100 * rate['rate']:.0f}%"


def _metric(row: dict, base: dict) -> str:
    q, base = row["quality"], base["quality"]
    if q["value"] is None or base["value"] is None:
        return f"{q['metric']} n/a"
    delta = q["value"] - base["value"]
    return f"{q['metric']} {base['value']:.3f} -> {q['value']:.3f} ({delta:+.3f})"


def print_task(fig: dict, quick: bool) -> None:
    rows, mon, sp = fig["rows"], fig["monitor"], fig["speed"]
    base = rows[0]
    print(
        f"\n== {fig['task']}: reference {fig['reference_size']} draws (stream "
        f"{fig['reference_stream']}), alpha {mon['alpha']}, {mon['permutations']} permutations, "
        f"BH over {sp['tests']} tests{' [QUICK: small pools, not the figures]' if quick else ''}"
    )
    drifted = rows[1]["pool"] if len(rows) > 1 else 0
    print(
        f"pools: in-distribution {base['pool']}, each drifted {drifted} inputs. Windows are "
        "random subsets of a finite pool: large windows (1000) overlap heavily, so their rates\n"
        "carry less information than their count suggests. Metric on "
        f"{fig['labelled_n']} labelled test inputs per row (generator's test split, paired)."
    )
    head = (
        f"{'scenario':17} {'strength':>8} {'det@50':>7} {'det@200':>7} {'det@1000':>8} "
        f"{'conf-drop@200':>13}  {'flagged @200 (share of windows)':54} metric (in-dist -> drifted)"
    )
    print(head)
    print("-" * len(head))
    for row in rows[1:]:
        w = row["windows"]
        flagged = ", ".join(
            f"{k} {100 * v:.0f}%"
            for k, v in list(w.get(str(DETECTION_AT), {}).get("flagged", {}).items())[:3]
        )
        print(
            f"{row['scenario']:17} {row['strength']:8g} "
            + " ".join(
                f"{_pct(w.get(str(s), {}).get('drift')):>{len(h)}}"
                for s, h in zip(SIZES, ("det@50 ", "det@200", "det@1000"), strict=True)
            )
            + f" {_pct(w.get(str(DETECTION_AT), {}).get('confidence_drop')):>13}  "
            f"{flagged or '-':54} {_metric(row, base)}"
        )
    w = base["windows"]
    fa = "  ".join(
        f"@{s}: {_pct(w[str(s)]['drift'])} ({w[str(s)]['drift']['k']}/{w[str(s)]['drift']['n']})"
        for s in SIZES
        if str(s) in w
    )
    print(f"{'in-distribution':17} false alarms {fa}")
    fired = {s: w[s] for s in w if w[s]["flagged"]}
    if fired:
        print(
            "  tests behind the false alarms (windows where each fired): "
            + "; ".join(
                f"@{s}: "
                + ", ".join(f"{k} {round(v * r['drift']['n'])}" for k, v in r["flagged"].items())
                for s, r in fired.items()
            )
        )
    conf = "  ".join(f"@{s}: {_pct(w[s]['confidence_drop'])}" for s in w)
    print(f"  confidence-drop test on in-distribution windows (one-sided, unadjusted): {conf}")
    q = base["quality"]
    if q["value"] is not None:
        print(f"  in-distribution {q['metric']} = {q['value']:.3f} on {q['n']} labelled inputs")

    print("targets (QUICK run: too few inputs and windows to judge them):" if quick else "targets:")
    for s in SIZES:
        if str(s) not in w:
            continue
        r = w[str(s)]["drift"]
        ok = r["rate"] <= TARGET_FALSE_ALARMS
        print(
            f"  {'PASS' if ok else 'FAIL'} false alarms @{s} {_pct(r)} <= 5% "
            f"(95% CI {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%, {r['n']} windows)"
        )
    scenario, strength = TARGETS[fig["task"]]
    target = next(
        (r for r in rows if r["scenario"] == scenario and r["strength"] == strength), None
    )
    what = {"darker": "brightness -30%", "noisier": "SNR -10 dB"}[scenario]
    if target is None or str(DETECTION_AT) not in target["windows"]:
        print(f"  ---- detection @{DETECTION_AT} of {what}: not measured in this run")
    else:
        r = target["windows"][str(DETECTION_AT)]["drift"]
        ok = r["rate"] >= TARGET_DETECTION
        print(
            f"  {'PASS' if ok else 'FAIL'} detection @{DETECTION_AT} of {what} ({scenario} "
            f"{strength:g}): {_pct(r)} >= 95% (95% CI {100 * r['ci95'][0]:.1f}-"
            f"{100 * r['ci95'][1]:.1f}%, {r['n']} windows)"
        )
    ok = sp["compare_window_1000_s"] <= TARGET_COMPARE_S
    print(
        f"  {'PASS' if ok else 'FAIL'} compare(reference {fig['reference_size']}, window "
        f"{sp['window']}): median {1000 * sp['compare_window_1000_s']:.0f} ms of "
        f"{SPEED_REPEATS} <= 1 s ({sp['tests']} tests incl. MMD, {mon['permutations']} "
        "permutations; extraction excluded)"
    )
    print(
        f"speed: extraction per input (1-thread worker, {sp['extraction_inputs']} inputs): input "
        f"features {sp['features_ms_per_input']:.1f} ms + model view "
        f"{sp['model_view_ms_per_input']:.1f} ms = "
        f"{sp['features_ms_per_input'] + sp['model_view_ms_per_input']:.1f} ms "
        f"(generating the input, not the monitor's cost: {sp['draw_ms_per_input']:.1f} ms)"
    )
    print(f"time: profiling {fig['profiling_s']:.0f} s, task total {fig['wall_s']:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("defects", "speech", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="smoke run: small pools, few windows")
    p.add_argument("--workers", type=int, default=2, help="processes for profiling and tests")
    p.add_argument("--pool", type=int, help="inputs per drifted pool (default 1200)")
    p.add_argument("--id-pool", type=int, help="inputs in the in-distribution pool (3000)")
    p.add_argument("--windows", type=int, help="windows per drifted pool and size (20)")
    p.add_argument("--id-windows", type=int, help="in-distribution windows at 50/200 (200)")
    p.add_argument("--id-windows-1000", type=int, help="in-distribution windows at 1000 (30)")
    p.add_argument("--labelled", type=int, help="labelled test inputs per metric row (200)")
    p.add_argument("--reference-size", type=int, help="default: monitor.reference_size")
    p.add_argument("--json", help="write every figure to this JSON file")
    args = p.parse_args()
    # 200 in-distribution windows: the false-alarm target is 5%, and 60 windows give a 95% CI
    # of about +-6 points around it; tests of windows of 50/200 are cheap (~30-50 ms).
    defaults = (
        dict(pool=200, id_pool=400, windows=5, id_windows=10, id_windows_1000=0, labelled=20)
        if args.quick
        else dict(
            pool=1200, id_pool=3000, windows=20, id_windows=200, id_windows_1000=30, labelled=200
        )
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.reference_size is None:
        args.reference_size = 200
    if min(args.pool, args.id_pool, args.windows, args.labelled) < 1 or args.workers < 1:
        sys.exit("pool sizes, windows, labelled and workers must be >= 1; fix the option")

    import multiprocessing

    tasks = ["defects", "speech"] if args.task == "all" else [args.task]
    started = time.perf_counter()
    figures = {}
    # spawn: no forked torch/BLAS thread state; each worker sets 1 thread before importing.
    with ProcessPoolExecutor(
        args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    ) as executor:
        for task in tasks:
            figures[task] = run_task(task, args, executor)
            if args.json:  # after each task: a failure later keeps what was measured
                _write_json(args, figures, time.perf_counter() - started)
            print_task(figures[task], args.quick)
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s on {os.cpu_count()} CPU cores, {args.workers} workers")
    if args.json:
        _write_json(args, figures, total)


def _write_json(args, figures: dict, total_s: float) -> None:
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "total_s": round(total_s, 1), "tasks": figures}, f, indent=2)


if __name__ == "__main__":
    main()
