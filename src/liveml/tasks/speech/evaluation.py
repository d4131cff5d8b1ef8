"""Evaluate a speech recognizer on the test split: WER/CER, CER by condition.

Quality comes from torchmetrics' CharErrorRate and WordErrorRate, not hand-written edit
distances. Plot data is written as CSV for DVC: `cer_by_snr.csv`, `cer_by_voice.csv`,
`cer_by_accent.csv` (group, cer, clips) and `errors.csv` (the worst utterances).
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Sequence
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


def evaluate(cfg: Any, module: Any, data_dir: Path, plots_dir: Path) -> dict:
    """Quality of the trained recognizer on the test split; writes DVC plot data to plots_dir.
    The evaluate stage adds the speed of the deployable (`speed_metrics`) and the scope check,
    and writes the metrics file."""
    waves, rows = load_split(Path(data_dir), "test")
    hyps = module.transcribe(waves, batch_size=int(cfg.model.batch_size))
    q = quality(hyps, rows)
    write_plots(Path(plots_dir), q, worst_errors(hyps, rows))
    return {
        "wer": q["wer"],
        "cer": q["cer"],
        "n_test_clips": len(waves),
        "test_audio_s": round(sum(len(w) for w in waves) / int(cfg.data.sample_rate), 2),
        "cer_by_condition": q["cer_by_condition"],
    }


def speed_metrics(speed: Any, sample_rate: int) -> dict:
    """The recognizer's speed figures: latency p50/p95 per utterance at batch 1 (the real test
    clips in turn), the real-time factor (median of call time / clip duration) and throughput
    in utterances/s at the best batch size of zero-padded clips."""
    rtf = [seconds / (speed.inputs[i].shape[-1] / sample_rate) for i, seconds in speed.calls]
    metrics = speed.metrics("throughput_ups", per_batch_size=False)
    return {
        "latency_p50_ms": metrics["latency_p50_ms"],
        "latency_p95_ms": metrics["latency_p95_ms"],
        "rtf": float(statistics.median(rtf)),
        **{k: v for k, v in metrics.items() if not k.startswith("latency_")},
    }
