"""Evaluation of the recognizer: WER/CER from torchmetrics, CER by condition, CSVs, and the
evaluate stage's speed figures of its deployable (the task names them: rtf, throughput_ups)."""

from __future__ import annotations

import csv

import pytest
import torch

from liveml.release.speed import task_speed
from liveml.tasks import get_task
from liveml.tasks.speech.evaluation import (
    condition_groups,
    evaluate,
    load_split,
    quality,
    snr_bucket,
    worst_errors,
)
from liveml.tasks.speech.module import SpeechModule

ROWS = [
    {"file": "a.wav", "text": "turn left", "voice": "en-us+m3", "snr_db": 35.0, "reverb": False},
    {"file": "b.wav", "text": "one two", "voice": "en+f5", "snr_db": 12.0, "reverb": True},
    {"file": "c.wav", "text": "stop", "voice": "en+m3", "snr_db": 18.0, "reverb": False},
]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_load_split_gives_float_waveforms_and_rows(tiny_speech_data):
    waves, manifest = load_split(tiny_speech_data, "test")
    assert len(waves) == len(manifest) == 8
    assert all(w.dtype == torch.float32 and w.ndim == 1 for w in waves)
    assert all(0 < w.abs().max() <= 1.0 for w in waves)


def test_snr_buckets_and_groups():
    assert [snr_bucket(x) for x in (5, 10, 25, 30, 45)] == [
        "<10 dB",
        "10-20 dB",
        "20-30 dB",
        ">=30 dB",
        ">=30 dB",
    ]
    assert condition_groups(ROWS[1]) == {
        "snr": "10-20 dB",
        "reverb": "reverb",
        "accent": "en",
        "voice": "f5",
        "kind": "digits",
    }


def test_quality_per_condition():
    q = quality(["turn left", "one too", "stop"], ROWS)
    assert q["cer"] == pytest.approx(1 / 20)  # one edit over 9 + 7 + 4 reference characters
    assert q["wer"] == pytest.approx(1 / 5)
    by = q["cer_by_condition"]
    assert by["reverb"] == {"dry": 0.0, "reverb": pytest.approx(1 / 7, abs=1e-4)}
    assert by["voice"]["m3"] == 0.0 and by["kind"]["command"] == 0.0
    assert q["counts"]["voice"] == {"m3": 2, "f5": 1}
    assert worst_errors(["turn left", "one too", "stop"], ROWS) == [
        ("b.wav", "one two", "one too", pytest.approx(1 / 7, abs=1e-4))
    ]


@pytest.mark.timeout(60)
def test_evaluate_end_to_end(speech_cfg, tiny_speech_data, tmp_path):
    cfg = speech_cfg(
        "data.n_train=24",
        "data.n_val=8",
        "data.n_test=8",
        "model.n_mels=32",
        "model.channels=[8,8]",
        "model.rnn_hidden=32",
        "model.rnn_layers=1",
    )
    module = SpeechModule(cfg)
    plots = tmp_path / "plots"
    quality_only = evaluate(cfg, module, tiny_speech_data, plots)
    assert set(quality_only) == {"wer", "cer", "n_test_clips", "test_audio_s", "cer_by_condition"}
    speed = task_speed(
        get_task("speech"),
        cfg,
        module,
        tiny_speech_data,
        batch_sizes=(1, 4),
        latency_time=0.5,
        min_time=0.1,
        max_time=1.0,
    )
    out = {**quality_only, **speed}  # what the evaluate stage writes (before the scope)
    assert set(out) == {
        "wer",
        "cer",
        "latency_p50_ms",
        "latency_p95_ms",
        "rtf",
        "throughput_ups",
        "best_batch_size",
        "device",
        "num_threads",
        "n_test_clips",
        "test_audio_s",
        "cer_by_condition",
    }
    assert out["n_test_clips"] == 8 and out["test_audio_s"] > 0
    assert out["cer"] >= 0 and out["wer"] >= 0
    assert 0 < out["latency_p50_ms"] <= out["latency_p95_ms"]
    assert out["rtf"] > 0 and out["throughput_ups"] > 0 and out["best_batch_size"] in (1, 4)
    assert out["device"].startswith("cpu") and out["num_threads"] == 1
    assert {"snr", "reverb", "accent", "voice", "kind"} <= set(out["cer_by_condition"])
    snr = rows(plots / "cer_by_snr.csv")
    assert list(snr[0]) == ["snr", "cer", "clips"] and sum(int(r["clips"]) for r in snr) == 8
    assert set(out["cer_by_condition"]["snr"]) == {r["snr"] for r in snr}
    assert sum(int(r["clips"]) for r in rows(plots / "cer_by_voice.csv")) == 8
    errors = rows(plots / "errors.csv")
    assert list(errors[0]) == ["file", "reference", "hypothesis", "cer"]  # untrained: all wrong
