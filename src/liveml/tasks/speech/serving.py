"""The speech endpoint (`/v1/speech`): WAV recordings in (resampled to the model's rate),
greedy CTC transcripts out."""

from __future__ import annotations

import numpy as np

from liveml.serving import inputs
from liveml.serving.predictors import Predictor, Prepared
from liveml.serving.runtime import Runtime
from liveml.tasks.speech.text import greedy_decode


class SpeechPredictor(Predictor):
    """WAV recordings in (resampled to the model's rate); greedy CTC transcripts out.

    The exported recognizer counts every row of a batch as S samples long, so only clips of
    equal length share a batch: zero-padding would change a clip's feature normalization.
    """

    def __init__(self, runtime: Runtime, limits: dict):
        super().__init__(runtime, limits)
        config = runtime.card["lineage"]["config"]
        self.sample_rate = int(config["data"]["sample_rate"])
        # The model needs one analysis window; shorter clips are padded with silence.
        self.min_samples = round(self.sample_rate * float(config["model"]["win_ms"]) / 1000)

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        wave = inputs.decode_wav(
            data, sample_rate=self.sample_rate, max_seconds=self.limits["max_audio_s"]
        )
        duration = len(wave) / self.sample_rate
        if len(wave) < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - len(wave)))
        return Prepared(wave.astype(np.float32), key=len(wave), meta={"duration_s": duration})

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        log_probs, lengths = outputs
        best = log_probs[index, : int(lengths[index])].argmax(-1)
        return {
            "transcript": greedy_decode(best.tolist()),
            "duration_s": round(meta["duration_s"], 4),
        }

    def suffix_of(self, data: bytes) -> str:
        return "wav"

    def warmup_input(self) -> Prepared:
        silence = np.zeros(self.sample_rate, np.float32)
        return Prepared(silence, len(silence), {"duration_s": 1.0})
