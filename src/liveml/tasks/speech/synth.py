"""Synthetic spoken commands and digit strings: eSpeak NG voices in simulated rooms.

Every utterance is a pure function of (recipe seed, split, index): the same recipe gives the
same bytes. Splits draw their speakers from disjoint voice variants, so the test score measures
generalization to unseen voices. Layout of `out_dir`:

    audio/<split>/<split>_00000.wav   16-bit PCM, mono, `sample_rate` Hz
    manifests/<split>.jsonl           one line per clip: file, text, voice, conditions, duration
    recipe.json                       the resolved recipe the data was made from
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from liveml.data.sampling import mix_seed
from liveml.tasks.speech.text import DIGITS, normalize
from liveml.tasks.speech.tts import SAMPLE_RATE as TTS_RATE
from liveml.tasks.speech.tts import speak

SPLITS = ("train", "val", "test")
# Coloured noise starts here, as behind a microphone's high-pass. A 1/f^2 spectrum down to the
# clip's lowest bin puts most of the noise power into a DC offset and a sub-hertz drift that
# nobody hears, so snr_db would overstate how noisy the clip sounds.
NOISE_LOW_HZ = 50.0


def _uniform(rng: np.random.Generator, bounds: Any) -> float:
    lo, hi = (float(b) for b in bounds)
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def utterance_text(rng: np.random.Generator, data: Any) -> str:
    """A command from the recipe's list or a digit string of 1..max_digits digits."""
    if rng.random() < float(data.command_share):
        return normalize(str(rng.choice(list(data.commands))))
    n = int(rng.integers(1, int(data.max_digits) + 1))
    return " ".join(DIGITS[int(d)] for d in rng.integers(0, 10, size=n))


def room_impulse(rng: np.random.Generator, rt60: float, rate: int) -> np.ndarray:
    """A synthetic room: direct path plus exponentially decaying diffuse noise (60 dB in rt60)."""
    n = max(1, int(rt60 * rate))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # ln(1000) = 6.9: -60 dB at rt60
    tail[: int(0.002 * rate)] = 0.0  # first reflections arrive after a couple of ms
    ir = 0.3 * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    ir[0] = 1.0
    return ir


def render(rng: np.random.Generator, text: str, voice: str, data: Any) -> tuple[np.ndarray, dict]:
    """(float32 samples at data.sample_rate in [-1, 1], the conditions that were drawn)."""
    from scipy.signal import fftconvolve, resample_poly

    c = data.conditions
    rate, pitch = _uniform(rng, c.rate), _uniform(rng, c.pitch)
    speech = speak(text, voice, rate=round(rate), pitch=round(pitch))
    x = speech.astype(np.float64) / 32768.0
    sr = int(data.sample_rate)
    g = np.gcd(sr, TTS_RATE)
    x = resample_poly(x, sr // g, TTS_RATE // g)
    reverb = bool(rng.random() < float(c.reverb))
    rt60 = _uniform(rng, c.rt60) if reverb else 0.0
    if reverb:
        x = fftconvolve(x, room_impulse(rng, rt60, sr))[: len(x) + int(0.5 * rt60 * sr)]
    peak = np.max(np.abs(x)) + 1e-12
    gain_db = _uniform(rng, c.gain_db)
    x = x / peak * 10 ** (gain_db / 20)
    lead, tail = (int(_uniform(rng, c.pad) * sr) for _ in range(2))
    x = np.concatenate([np.zeros(lead), x, np.zeros(tail)])
    snr_db = _uniform(rng, c.snr_db)
    speech_power = np.mean(x[lead : len(x) - tail] ** 2) + 1e-12
    noise = _colored_noise(rng, len(x), sr)
    x = x + noise * np.sqrt(speech_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    conditions = {
        "rate_wpm": round(rate, 1),
        "pitch": round(pitch, 1),
        "snr_db": round(snr_db, 2),
        "reverb": reverb,
        "rt60_s": round(rt60, 3),
        "gain_db": round(gain_db, 2),
    }
    return x, conditions


def _colored_noise(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """White, pink or brown background noise (fans, crowds, traffic differ in colour)."""
    white = rng.standard_normal(n)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return white
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum *= (f >= NOISE_LOW_HZ) / np.maximum(f, NOISE_LOW_HZ) ** (0.5 * kind)  # 1/f, 1/f^2
    return np.fft.irfft(spectrum, n)


def generate(data: Any, out_dir: str | Path) -> dict:
    """Write all splits of the recipe `data` into `out_dir`; return a small summary."""
    import soundfile as sf

    out = Path(out_dir)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    _check_voices(data)
    sizes = {"train": int(data.n_train), "val": int(data.n_val), "test": int(data.n_test)}
    summary: dict[str, Any] = {"sample_rate": int(data.sample_rate), "splits": {}}
    for s, split in enumerate(SPLITS):
        folder = out / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        variants = list(getattr(data.voices, split))
        lines, seconds = [], 0.0
        for i in range(sizes[split]):
            rng = np.random.default_rng(mix_seed(int(data.seed), s, i))
            text = utterance_text(rng, data)
            accent = str(rng.choice(list(data.voices.accents)))
            voice = f"{accent}+{rng.choice(variants)}"
            samples, conditions = render(rng, text, voice, data)
            rel = f"audio/{split}/{split}_{i:05d}.wav"
            sf.write(out / rel, samples, int(data.sample_rate), subtype="PCM_16")
            duration = len(samples) / int(data.sample_rate)
            seconds += duration
            line = {"file": rel, "text": text, "voice": voice, **conditions}
            lines.append(json.dumps({**line, "duration_s": round(duration, 4)}))
        (out / "manifests" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        summary["splits"][split] = {"clips": sizes[split], "hours": round(seconds / 3600, 3)}
    recipe = _plain(data)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return summary


def _check_voices(data: Any) -> None:
    from liveml.core.config import ConfigError

    sets = {split: set(getattr(data.voices, split)) for split in SPLITS}
    for split in SPLITS:
        if not sets[split]:
            raise ConfigError(
                f"`data.voices.{split}` is empty; fix: list at least one eSpeak variant there."
            )
    for held_out in ("val", "test"):
        shared = sorted(sets["train"] & sets[held_out])
        if shared:
            raise ConfigError(
                f"`data.voices.{held_out}` shares {shared} with `data.voices.train`; held-out "
                "voices must never occur in training. Fix: move them to one list only."
            )


def _plain(data: Any) -> dict:
    if isinstance(data, dict):
        return data
    from omegaconf import OmegaConf

    return OmegaConf.to_container(data, resolve=True)  # type: ignore[return-value]
