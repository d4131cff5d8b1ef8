"""The synthetic spoken-commands generator: deterministic, held-out voices, normalized
transcripts, conditions within the recipe, and an SNR knob that changes the audio."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from liveml.core.config import ConfigError
from liveml.tasks.speech.checks import estimate_snr, frame_powers
from liveml.tasks.speech.synth import SPLITS, generate, render
from liveml.tasks.speech.text import DIGITS, normalize

SMALL = {"n_train": 3, "n_val": 1, "n_test": 1}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def manifest(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "manifests" / f"{split}.jsonl").open()]


def variants(root: Path, split: str) -> set[str]:
    return {clip["voice"].partition("+")[2] for clip in manifest(root, split)}


def test_same_seed_gives_identical_files(make_speech_data, tmp_path):
    a = file_digests(make_speech_data(tmp_path / "a", SMALL))
    b = file_digests(make_speech_data(tmp_path / "b", SMALL))
    assert len(a) == 5 + 3 + 1 and a == b  # clips, manifests, recipe.json


def test_other_seed_gives_other_clips(make_speech_data, tmp_path):
    a = file_digests(make_speech_data(tmp_path / "a", SMALL))
    b = file_digests(make_speech_data(tmp_path / "b", {**SMALL, "seed": 1}))
    assert a.keys() == b.keys() and all(a[name] != b[name] for name in a)


def test_clips_do_not_depend_on_generation_order(make_speech_data, tmp_path):
    # Each clip has its own RNG: a bigger split starts with the same clips.
    few = file_digests(make_speech_data(tmp_path / "few", SMALL))
    more = file_digests(make_speech_data(tmp_path / "more", {**SMALL, "n_train": 5}))
    assert all(more[name] == digest for name, digest in few.items() if name.endswith(".wav"))


def test_layout_sizes_and_format(tiny_speech_data, tiny_speech_recipe):
    recipe = tiny_speech_recipe()
    assert json.loads((tiny_speech_data / "recipe.json").read_text())["seed"] == recipe.seed
    for split in SPLITS:
        clips = manifest(tiny_speech_data, split)
        assert len(clips) == recipe[f"n_{split}"]
        assert [c["file"] for c in clips] == [
            f"audio/{split}/{split}_{i:05d}.wav" for i in range(len(clips))
        ]
        for clip in clips:
            info = sf.info(tiny_speech_data / clip["file"])
            assert (info.format, info.subtype) == ("WAV", "PCM_16")
            assert (info.samplerate, info.channels) == (16_000, 1)
            assert clip["duration_s"] == pytest.approx(info.frames / 16_000, abs=1e-4)
    on_disk = {p.relative_to(tiny_speech_data).as_posix() for p in tiny_speech_data.rglob("*.wav")}
    assert on_disk == {c["file"] for s in SPLITS for c in manifest(tiny_speech_data, s)}


def test_val_and_test_voices_are_held_out(tiny_speech_data, tiny_speech_recipe):
    voices = tiny_speech_recipe().voices
    train = variants(tiny_speech_data, "train")
    for split in SPLITS:
        assert variants(tiny_speech_data, split) <= set(voices[split])
        accents = {c["voice"].partition("+")[0] for c in manifest(tiny_speech_data, split)}
        assert accents <= set(voices.accents)
    assert not train & variants(tiny_speech_data, "val")
    assert not train & variants(tiny_speech_data, "test")


@pytest.mark.parametrize("split", ["val", "test"])
def test_overlapping_voices_are_refused(split, tiny_speech_recipe, tmp_path):
    voices = tiny_speech_recipe().voices
    shared = voices.train[0]
    recipe = tiny_speech_recipe({f"voices.{split}": [*voices[split], shared]})
    with pytest.raises(ConfigError, match=f"voices.{split}.*{shared}"):
        generate(recipe, tmp_path / "d")
    assert not list(tmp_path.rglob("*.wav"))  # refused before any clip was written


def test_empty_voice_list_is_refused(tiny_speech_recipe, tmp_path):
    with pytest.raises(ConfigError, match=r"voices\.val"):
        generate(tiny_speech_recipe({"voices.val": []}), tmp_path / "d")


def test_transcripts_are_normalized_and_in_vocabulary(tiny_speech_data, tiny_speech_recipe):
    recipe = tiny_speech_recipe()
    commands = {normalize(c) for c in recipe.commands}
    kinds = set()
    for split in SPLITS:
        for clip in manifest(tiny_speech_data, split):
            text = clip["text"]
            assert text == normalize(text) and text
            words = text.split()
            is_digits = all(w in DIGITS for w in words)
            assert text in commands or (is_digits and len(words) <= recipe.max_digits), text
            kinds.add("digits" if is_digits else "command")
    assert kinds == {"digits", "command"}


def within(value: float, bounds, tolerance: float) -> bool:
    lo, hi = (float(b) for b in bounds)
    return lo - tolerance <= value <= hi + tolerance


def test_conditions_within_the_recipe(tiny_speech_data, tiny_speech_recipe):
    c = tiny_speech_recipe().conditions
    clips = [clip for split in SPLITS for clip in manifest(tiny_speech_data, split)]
    for clip in clips:
        assert within(clip["rate_wpm"], c.rate, 0.05) and within(clip["pitch"], c.pitch, 0.05)
        assert within(clip["snr_db"], c.snr_db, 0.005)
        assert within(clip["gain_db"], c.gain_db, 0.005)
        if clip["reverb"]:
            assert within(clip["rt60_s"], c.rt60, 0.0005)
        else:
            assert clip["rt60_s"] == 0.0
        assert clip["duration_s"] >= 2 * c.pad[0]
    assert {clip["reverb"] for clip in clips} == {True, False}  # reverb=0.3 over 40 clips


def estimated_snr(recipe, n: int = 6) -> list[float]:
    """SNR estimated from the audio of `n` renders of one command (same seeds, same speech)."""
    out = []
    for i in range(n):
        x, conditions = render(np.random.default_rng(i), "turn left", "en-us+m1", recipe)
        out.append(estimate_snr(frame_powers(x.astype(np.float64) ** 2, 16_000)))
        assert conditions["snr_db"] == recipe.conditions.snr_db[0]
    return out


def test_snr_knob_changes_the_noise(tiny_speech_recipe):
    noisy = estimated_snr(tiny_speech_recipe({"conditions.snr_db": [5, 5]}))
    quiet = estimated_snr(tiny_speech_recipe({"conditions.snr_db": [40, 40]}))
    assert max(noisy) + 25 < min(quiet)
    # The estimate reads a few dB high (the louder half of the frames stands for the speech).
    assert 2 < np.mean(noisy) < 13 and 37 < np.mean(quiet) < 48


def test_background_noise_is_audible(tiny_speech_recipe):
    # No DC offset or sub-audio drift: the noise that snr_db measures is noise one hears.
    recipe = tiny_speech_recipe({"conditions.snr_db": [5, 5], "conditions.gain_db": [-6, -6]})
    for i in range(6):
        x, _ = render(np.random.default_rng(i), "stop", "en-us+m1", recipe)
        power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        low = power[np.fft.rfftfreq(len(x), 1 / 16_000) < 20].sum()
        assert low < 0.01 * power.sum()
