"""Evaluate a speech recognizer on the test split: WER/CER, CER by condition, speed.

Quality comes from torchmetrics' CharErrorRate and WordErrorRate, not hand-written edit
distances. Plot data is written as CSV for DVC: `cer_by_snr.csv`, `cer_by_voice.csv`,
`cer_by_accent.csv` (group, cer, clips) and `errors.csv` (the worst utterances).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from liveml.core.atomic import atomic_write_csv
from liveml.tasks.speech.text import DIGITS

SNR_BUCKETS = (10.0, 20.0, 30.0)  # edges in dB: <10, 10-20, 20-30, >=30
N_ERRORS = 20


def load_split(data_dir: Path, split: str = "test") -> tuple[list[Tensor], list[dict]]:
    """1-D float32 waveforms in [-1, 1] and manifest rows of one split, in manifest order."""
    from liveml.tasks.speech.datamodule import load

    waves, rows = load(data_dir, split)
    return [w.to(torch.float32) / 32768.0 for w in waves], rows


def snr_bucket(snr_db: float) -> str:
    """A readable SNR range for grouping, e.g. '20-30 dB'."""
    edges = (float("-inf"), *SNR_BUCKETS, float("inf"))
    for lo, hi in itertools.pairwise(edges):
        if lo <= snr_db < hi:
            if lo == float("-inf"):
                return f"<{hi:g} dB"
            return f">={lo:g} dB" if hi == float("inf") else f"{lo:g}-{hi:g} dB"
    return "unknown"


def condition_groups(row: dict) -> dict[str, str]:
    """The condition values a clip is grouped by for `cer_by_condition`."""
    accent, _, variant = str(row["voice"]).partition("+")
    return {
        "snr": snr_bucket(float(row["snr_db"])),
        "reverb": "reverb" if row.get("reverb") else "dry",
        "accent": accent,
        "voice": variant or accent,
        "kind": "digits" if row["text"].split()[0] in DIGITS else "command",
    }


def _cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    from torchmetrics.text import CharErrorRate

    return float(CharErrorRate()(list(hyps), list(refs)))


def quality(hyps: Sequence[str], rows: Sequence[dict]) -> dict:
    """WER and CER over all clips, and CER per condition group ({condition: {group: cer}})."""
    from torchmetrics.text import WordErrorRate

    refs = [r["text"] for r in rows]
    by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, row in enumerate(rows):
        for cond, group in condition_groups(row).items():
            by[cond][group].append(i)
    by_condition = {
        cond: {
            g: round(_cer([hyps[i] for i in idx], [refs[i] for i in idx]), 5)
            for g, idx in sorted(groups.items())
        }
        for cond, groups in by.items()
    }
    counts = {cond: {g: len(idx) for g, idx in groups.items()} for cond, groups in by.items()}
    return {
        "wer": float(WordErrorRate()(list(hyps), refs)),
        "cer": _cer(hyps, refs),
        "cer_by_condition": by_condition,
        "counts": counts,
    }


def worst_errors(hyps: Sequence[str], rows: Sequence[dict], n: int = N_ERRORS) -> list[tuple]:
    """(file, reference, hypothesis, cer) of the `n` utterances with the highest CER."""
    from torchmetrics.functional.text import char_error_rate

    scored = [
        (r["file"], r["text"], h, round(float(char_error_rate(h, r["text"])), 4))
        for h, r in zip(hyps, rows, strict=True)
        if h != r["text"]
    ]
    return sorted(scored, key=lambda e: -e[3])[:n]


def write_plots(plots_dir: Path, q: dict, errors: list[tuple]) -> None:
    """`cer_by_<condition>.csv` (group, cer, clips) for snr, voice, accent, reverb, kind, and
    `errors.csv` (file, reference, hypothesis, cer)."""
    plots_dir = Path(plots_dir)
    for cond, groups in q["cer_by_condition"].items():
        rows = [(g, cer, q["counts"][cond][g]) for g, cer in groups.items()]
        atomic_write_csv(plots_dir / f"cer_by_{cond}.csv", (cond, "cer", "clips"), rows)
    header = ("file", "reference", "hypothesis", "cer")
    atomic_write_csv(plots_dir / "errors.csv", header, errors)


def measure_speed(
    model: Callable[[Tensor], Any],
    waves: Sequence[Tensor],
    sample_rate: int,
    *,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    latency_time: float = 5.0,
    min_time: float = 1.0,
    max_time: float = 12.0,
) -> dict:
    """Latency p50/p95 and real-time factor per utterance at batch 1, over the real test clips
    in turn, and throughput (utterances/s) at the best batch size of zero-padded real clips.

    Latency depends on the clip's length, so unlike `liveml.release.speed.latency` (one fixed input)
    every clip is timed once, in order, until `latency_time` seconds are spent (at least 5).
    """
    import numpy as np

    from liveml.release.speed import throughput

    ms, rtf = [], []
    with torch.inference_mode():
        for w in waves[:3]:  # warm-up: first calls allocate
            model(w[None])
        start = time.perf_counter()
        for w in waves:
            t0 = time.perf_counter()
            model(w[None])
            dt = time.perf_counter() - t0
            ms.append(dt * 1000.0)
            rtf.append(dt / (len(w) / sample_rate))
            if len(ms) >= 5 and time.perf_counter() - start > latency_time:
                break

    def make_batch(bs: int) -> Tensor:
        clips = [waves[i % len(waves)] for i in range(bs)]
        return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)

    thr = throughput(model, make_batch, batch_sizes, min_time=min_time, max_time=max_time)
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
        "rtf": float(statistics.median(rtf)),
        "throughput_ups": thr["throughput"],
        "best_batch_size": thr["best_batch_size"],
        "speed_clips": len(ms),
    }


def evaluate(cfg: Any, module: Any, data_dir: Path, plots_dir: Path, **speed_kw: Any) -> dict:
    """Quality and speed of the trained recognizer on the test split; writes DVC plot data to
    plots_dir. Speed is timed on `module.deployable()`, the network that gets exported.

    `speed_kw` goes to `measure_speed` (tests shorten it). The evaluate stage adds the scope
    check and writes the metrics file.
    """
    from liveml.release.speed import device_name

    waves, rows = load_split(Path(data_dir), "test")
    hyps = module.transcribe(waves, batch_size=int(cfg.model.batch_size))
    q = quality(hyps, rows)
    write_plots(Path(plots_dir), q, worst_errors(hyps, rows))
    deployable = module.deployable()
    speed = measure_speed(deployable, waves, int(cfg.data.sample_rate), **speed_kw)
    speed.pop("speed_clips")
    return {
        "wer": q["wer"],
        "cer": q["cer"],
        **speed,
        "device": device_name(next(deployable.parameters()).device),
        "num_threads": torch.get_num_threads(),
        "n_test_clips": len(waves),
        "test_audio_s": round(sum(len(w) for w in waves) / int(cfg.data.sample_rate), 2),
        "cer_by_condition": q["cer_by_condition"],
    }
