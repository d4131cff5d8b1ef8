"""What the drift monitor needs from the speech task: features of an uploaded recording, the
recognizer's own view of a batch of recordings, drifted recipes and fresh recordings from the
generator (the framework's `liveml.monitoring.monitor.draw_inputs` owns the loop and seeds).

Features are level, noise, spectrum and pause statistics of the WAV as uploaded (the monitor
watches what clients send). The model view runs the server's preparation (decode and resample
to the model's rate, pad to one analysis window, batch only equal lengths) through the eager
recognizer, so its transcript class agrees with what the server answers for the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from liveml.tasks.speech import SCENARIOS
from liveml.tasks.speech.checks import FRAME, NOISE_QUANTILE, estimate_snr, frame_powers

FEATURES: tuple[str, ...] = (
    "duration",
    "rms_db",
    "snr_db",
    "spectral_centroid",
    "silence_ratio",
    "zero_crossing",
)
CLASSES = ("command", "digits", "empty", "other")  # predicted_class values of model_view

# A frame is silence when speech adds less than the noise itself: power below 4x (6 dB over)
# the clip's noise floor (the mean of its quietest NOISE_QUANTILE frames, as estimate_snr).
# Relative to the clip's own floor, not to -60 dBFS or the peak: the recipe's noise floor sits
# 30-70 dB under full scale, so an absolute threshold would count only the cleanest, quietest
# clips, and a peak-relative one would track the SNR that snr_db already measures. This way
# silence_ratio is the share of pads and pauses, which faster speech and longer pads move
# (16 paired clips, speech 50% faster: +0.86 baseline SDs here, +0.27 for -60 dBFS or -40 dB
# under the peak frame).
SILENCE_OVER_FLOOR_DB = 6.0
# unseen_voices mixes voices by repeating list entries: the realized share of test voices is
# within this of the strength (the shortest list that gets there).
SHARE_TOLERANCE = 0.01


# ---------------------------------------------------------------------------------------------
# Features of one uploaded recording


def decode_wave(data: bytes, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Uploaded WAV bytes -> (mono float32 in [-1, 1], its rate), decoded exactly as the server
    does (resampled to `sample_rate` when given); a file the server would refuse is a
    ValueError that names the problem and the fix."""
    import soundfile as sf

    from liveml.serving.inputs import InputError, decode_wav

    if sample_rate is None:
        try:
            sample_rate = sf.info(io.BytesIO(data)).samplerate
        except Exception:
            sample_rate = 16_000  # unreadable: decode_wav below says why, with the fix
    try:
        wave = decode_wav(data, sample_rate=int(sample_rate), max_seconds=math.inf)
    except InputError as e:
        raise ValueError(f"cannot decode the recording: {e.message}") from e
    return wave, int(sample_rate)


def input_features(data: bytes) -> dict[str, float]:
    """Level, noise, spectrum and pause statistics of one uploaded WAV, keyed by FEATURES:
    duration (s), rms_db (dBFS), snr_db (estimated, as the validate stage does),
    spectral_centroid (Hz, mean over the louder half of 20 ms frames), silence_ratio (share of
    20 ms frames within 6 dB of the noise floor), zero_crossing (sign changes per second)."""
    wave, rate = decode_wave(data)
    x = wave.astype(np.float64)
    power = x**2
    frames = frame_powers(power, rate)
    ordered = np.sort(frames)
    floor = ordered[: max(1, int(len(ordered) * NOISE_QUANTILE))].mean()
    return {
        "duration": len(x) / rate,
        "rms_db": _db(float(power.mean())),
        "snr_db": float(estimate_snr(frames)),
        "spectral_centroid": _spectral_centroid(x, rate, frames),
        # <=: digital silence (a floor of 0) is silence too.
        "silence_ratio": float(np.mean(frames <= floor * 10 ** (SILENCE_OVER_FLOOR_DB / 10))),
        "zero_crossing": float(np.count_nonzero(np.diff(np.signbit(x))) * rate / len(x)),
    }


def _spectral_centroid(x: np.ndarray, rate: int, frames: np.ndarray) -> float:
    """Mean magnitude-weighted frequency (Hz) of the frames at or above the median frame
    power: the speech, not the pads' noise (whose colour snr_db and zero_crossing show)."""
    n = max(1, int(FRAME * rate))
    if len(x) < n:
        segments = np.pad(x, (0, n - len(x)))[None, :]
    else:
        segments = x[: len(x) // n * n].reshape(-1, n)
    loud = segments[frames >= np.median(frames)]
    magnitude = np.abs(np.fft.rfft(loud * np.hanning(n), axis=1))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    total = magnitude.sum(axis=1)
    sounding = total > 0
    if not sounding.any():
        return 0.0
    return float(np.mean(magnitude[sounding] @ freqs / total[sounding]))


def _db(power: float) -> float:
    return 10 * math.log10(max(power, 1e-20))


# ---------------------------------------------------------------------------------------------
# The model's view


def transcript_class(transcript: str, commands: list[str]) -> str:
    """What a transcript is, one of CLASSES: "command" (one of `commands`, normalized),
    "digits" (only digit words), "empty" (blank), else "other"."""
    from liveml.tasks.speech.text import DIGITS, normalize

    text = normalize(transcript)
    if not text:
        return "empty"
    if text in {normalize(str(c)) for c in commands}:
        return "command"
    if all(word in DIGITS for word in text.split()):
        return "digits"
    return "other"


def model_view(module: Any, inputs: list[bytes], *, batch_size: int = 32) -> dict:
    """The recognizer's view of uploaded WAVs: {"embedding": float32 (n, 2 * rnn_hidden), the
    encoder's (BiGRU's) outputs averaged over valid frames, "confidence": float64 (n,), the mean
    over output frames of the top posterior, "predicted_class": transcript_class of the greedy
    transcript}.

    `module` is an eval-mode SpeechModule (`liveml.training.run.load_trained(...)[0]`). Only clips
    of equal length share a batch, as on the server: the recognizer sees a padded clip
    differently (its features are normalized over the whole row).
    """
    import torch

    from liveml.tasks.speech.text import greedy_decode

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; fix: pass a batch size of 1 or more")
    cfg = module.cfg
    rate = int(cfg.data.sample_rate)
    commands = list(cfg.data.commands)
    recognizer = module.model
    width = 2 * int(cfg.model.rnn_hidden)
    waves = [server_wave(data, rate, float(cfg.model.win_ms)) for data in inputs]
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)

    encoded: list[torch.Tensor] = []
    hook = recognizer.rnn.register_forward_hook(lambda _m, _i, out: encoded.append(out[0]))
    embedding = np.zeros((len(inputs), width), np.float32)
    confidence = np.zeros(len(inputs), np.float64)
    predicted = [""] * len(inputs)
    try:
        with torch.inference_mode():
            for length, members in by_length.items():
                for start in range(0, len(members), batch_size):
                    idx = members[start : start + batch_size]
                    x = torch.from_numpy(np.stack([waves[i] for i in idx])).to(module.device)
                    encoded.clear()
                    full = torch.full((len(idx),), length, dtype=torch.int64, device=x.device)
                    log_probs, lengths = recognizer(x, full)
                    lengths = lengths.long().cpu()
                    hidden = encoded[0].float().cpu()
                    log_probs = log_probs.float().cpu()
                    for row, i in enumerate(idx):
                        n = int(lengths[row])
                        embedding[i] = hidden[row, :n].mean(0).numpy()
                        top = log_probs[row, :n].max(-1)
                        confidence[i] = float(top.values.exp().mean())
                        text = greedy_decode(top.indices.tolist())
                        predicted[i] = transcript_class(text, commands)
    finally:
        hook.remove()
    return {"embedding": embedding, "confidence": confidence, "predicted_class": predicted}


def server_wave(data: bytes, sample_rate: int, win_ms: float) -> np.ndarray:
    """float32 samples at `sample_rate`, at least one analysis window long (zero-padded): the
    server's preparation of one upload (`serving.SpeechPredictor.decode`)."""
    wave, _ = decode_wave(data, sample_rate)
    min_samples = round(sample_rate * win_ms / 1000)
    if len(wave) < min_samples:
        wave = np.pad(wave, (0, min_samples - len(wave)))
    return wave.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fresh and drifted recordings


def drifted_recipe(data_cfg: Any, scenario: str | None, strength: float):
    """The recipe (a typed DictConfig of SpeechDataConfig, as `synth.render` takes it) with
    `scenario` applied at `strength` (0 = unchanged).

    unseen_voices puts the held-out test voices into `voices.train` (the voices that
    the drift draws speak with), each variant repeated so that a uniform pick lands on a test
    voice with probability `strength` (within SHARE_TOLERANCE). The generator's own
    `generate` refuses such a recipe (train and test voices overlap): draw clips with
    `liveml.monitoring.monitor.draw_inputs` instead. Test voices rather than new accents: every
    English eSpeak accent is already in data.voices.accents, and the test voices are the
    recipe's own definition of an unseen speaker, the one the model's test score was measured
    on.
    """
    from omegaconf import OmegaConf

    from liveml.tasks.speech.config import SpeechDataConfig

    recipe = OmegaConf.merge(OmegaConf.structured(SpeechDataConfig), data_cfg)
    strength = _check_strength(scenario, strength)
    if scenario is None or strength == 0:
        return recipe
    c = recipe.conditions
    if scenario == "noisier":
        c.snr_db = [float(v) - strength for v in c.snr_db]
    elif scenario == "faster":
        c.rate = [float(v) * (1 + strength) for v in c.rate]
    else:  # unseen_voices
        recipe.voices.train = voice_mix(
            list(recipe.voices.train), list(recipe.voices.test), strength
        )
    return recipe


def voice_mix(seen: list[str], unseen: list[str], share: float) -> list[str]:
    """`seen` repeated a times and `unseen` b times, for the shortest such list in which
    the unseen entries' share is within SHARE_TOLERANCE of `share` (exact at 0 and 1)."""
    if not unseen:
        raise ValueError("data.voices.test is empty; fix: list the held-out voices there")
    if share >= 1:
        return list(unseen)
    # Per seen entry, this many unseen entries give exactly `share`.
    ratio = share / (1 - share) * len(seen) / len(unseen)
    best: tuple[float, int, int] = (math.inf, 1, 1)
    for a in range(1, 10_001):
        b = max(1, round(ratio * a))  # at least 1: any strength > 0 mixes some in
        error = abs(b * len(unseen) / (a * len(seen) + b * len(unseen)) - share)
        best = min(best, (error, a, b))
        if error <= SHARE_TOLERANCE:
            break
    _, a, b = best
    return list(seen) * a + list(unseen) * b


def _check_strength(scenario: str | None, strength: float) -> float:
    from liveml.monitoring.monitor import check_scenario

    strength = check_scenario(SCENARIOS, scenario, strength)
    if scenario == "unseen_voices" and strength > 1:
        raise ValueError(
            f"unseen_voices at strength {strength}: it is a share of clips; "
            "fix: pass a strength in [0, 1]"
        )
    return strength


def draw_input(recipe: Any, rng: np.random.Generator) -> bytes:
    """One fresh recording of `recipe` (a data config or a drifted recipe) as 16-bit PCM WAV
    bytes at data.sample_rate, as the generator writes them and a client uploads them.

    The framework seeds `rng` per clip from (data.seed, stream, index), as `synth.generate`
    seeds a clip. Speakers are the TRAIN voices (data.voices.train), the ones the model was
    trained for. Text, accent, pads and the other conditions come from the same draws under
    every scenario, so clip i differs between strengths mostly in the drifted condition.
    """
    import soundfile as sf
    from omegaconf import DictConfig, OmegaConf

    from liveml.tasks.speech.config import SpeechDataConfig
    from liveml.tasks.speech.synth import render, utterance_text

    if not isinstance(recipe, DictConfig):
        recipe = OmegaConf.merge(OmegaConf.structured(SpeechDataConfig), recipe)
    # As synth.generate draws a clip: text, accent, variant, then the recording.
    text = utterance_text(rng, recipe)
    voice = f"{rng.choice(list(recipe.voices.accents))}+{rng.choice(list(recipe.voices.train))}"
    samples, _ = render(rng, text, voice, recipe)
    buffer = io.BytesIO()
    sf.write(buffer, samples, int(recipe.sample_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()
