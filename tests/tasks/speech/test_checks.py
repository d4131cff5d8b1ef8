"""Data validation of the speech task: clean data passes, and each check catches its fault,
naming the file at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from liveml.tasks.speech.checks import CHECKS, validate
from liveml.tasks.speech.text import DIGITS

CLIP = "audio/val/val_00003.wav"


def load(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "manifests" / f"{split}.jsonl").open()]


def save(root: Path, split: str, clips: list[dict]) -> None:
    text = "".join(json.dumps(c) + "\n" for c in clips)
    (root / "manifests" / f"{split}.jsonl").write_text(text)


def edit(root: Path, file: str, **changes) -> dict:
    """Change the manifest line of `file`; returns the line as it was."""
    split = file.split("/")[1]
    clips = load(root, split)
    clip = next(c for c in clips if c["file"] == file)
    before = dict(clip)
    clip.update(changes)
    save(root, split, clips)
    return before


def named(report: dict, fragment: str) -> list[str]:
    """Messages of the problems whose file ends with `fragment`."""
    return [msg for file, msg in report["problems"] if file.endswith(fragment)]


def failing(report: dict) -> list[str]:
    return [name for name, c in report["checks"].items() if not c["passed"]]


def only_check_failing(report: dict, check: str) -> None:
    assert failing(report) == [check], report["problems"]


def audio(root: Path, file: str = CLIP) -> np.ndarray:
    return sf.read(root / file, dtype="float64")[0]


def test_clean_data_passes(tiny_speech_data, tiny_speech_recipe):
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    assert report["ok"] and report["problems"] == []
    assert set(report) == {
        "ok",
        "problems",
        "checks",
        "summary",
        "splits",
        "vocabulary",
        "voices",
        "snr_by_condition",
    }
    assert set(report["checks"]) == set(CHECKS)
    assert all(c == {"passed": True, "failed_files": 0} for c in report["checks"].values())
    summary = report["summary"]
    assert (summary["clips_train"], summary["clips_val"], summary["clips_test"]) == (24, 8, 8)
    assert all(isinstance(v, int | float) for v in summary.values())
    for split in ("train", "val", "test"):
        stats = report["splits"][split]["duration_s"]
        assert 0.2 < stats["min"] <= stats["p50"] <= stats["max"] < 10
        assert set(stats) == {"mean", "std", "min", "max", "p5", "p50", "p95"}
        assert -40 < report["splits"][split]["rms_dbfs"]["mean"] < -10
    vocabulary = report["vocabulary"]
    assert set(DIGITS) <= set(vocabulary["word_counts"]) and "left" in vocabulary["word_counts"]
    assert sum(vocabulary["word_counts"].values()) == sum(vocabulary["words_per_split"].values())
    assert vocabulary["oov_words"] == {}
    conditions = report["snr_by_condition"]
    assert set(conditions) == {"reverb", "snr_db", "accent"}
    assert set(conditions["reverb"]) == {"yes", "no"}
    assert sum(g["clips"] for g in conditions["accent"].values()) == 40
    buckets = conditions["snr_db"]  # the estimate follows the recipe's snr_db
    assert buckets["10-20 dB"]["snr_est_db"] < buckets[">=30 dB"]["snr_est_db"]
    json.dumps(report)  # the stage writes it as DVC metrics


def test_missing_data_folder_is_a_clear_error(tmp_path, tiny_speech_recipe):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        validate(tiny_speech_recipe(), tmp_path / "nowhere")


def test_missing_file_is_named(tiny_speech_data, tiny_speech_recipe):
    (tiny_speech_data / CLIP).unlink()
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "files")
    assert any("missing" in m for m in named(report, CLIP))


def test_extra_file_is_named(tiny_speech_data, tiny_speech_recipe):
    shutil.copyfile(tiny_speech_data / CLIP, tiny_speech_data / "audio/val/val_00099.wav")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "files")
    assert any("extra" in m for m in named(report, "audio/val/val_00099.wav"))


@pytest.mark.parametrize("damage", ["garble_header", "not_audio", "empty_file"])
def test_corrupt_file_is_named(damage, tiny_speech_data, tiny_speech_recipe):
    path = tiny_speech_data / CLIP
    data = path.read_bytes()
    if damage == "garble_header":
        path.write_bytes(bytes(b ^ 0xFF for b in data[:44]) + data[44:])
    elif damage == "not_audio":
        path.write_text("this is not a wav file")
    else:
        path.write_bytes(b"")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "files")
    assert any("cannot be decoded" in m for m in named(report, CLIP))


def test_truncated_file_is_named(tiny_speech_data, tiny_speech_recipe):
    # libsndfile reads a cut-short WAV without complaint; the header sizes give it away.
    path = tiny_speech_data / CLIP
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    assert any("truncated" in m for m in named(report, CLIP))
    assert any("duration_s" in m for m in named(report, CLIP))  # and it is shorter


def test_wrong_sample_rate_is_named(tiny_speech_data, tiny_speech_recipe):
    x = audio(tiny_speech_data)
    sf.write(tiny_speech_data / CLIP, x[::2], 8000, subtype="PCM_16")  # same duration
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "format")
    assert any("8000 Hz" in m for m in named(report, CLIP))


def test_stereo_is_named(tiny_speech_data, tiny_speech_recipe):
    x = audio(tiny_speech_data)
    sf.write(tiny_speech_data / CLIP, np.stack([x, x], axis=1), 16_000, subtype="PCM_16")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "format")
    assert any("2 channel(s)" in m for m in named(report, CLIP))


def test_float_samples_are_named(tiny_speech_data, tiny_speech_recipe):
    sf.write(tiny_speech_data / CLIP, audio(tiny_speech_data), 16_000, subtype="FLOAT")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "format")
    assert any("FLOAT" in m for m in named(report, CLIP))


def test_silent_clip_is_named(tiny_speech_data, tiny_speech_recipe):
    x = audio(tiny_speech_data)
    sf.write(tiny_speech_data / CLIP, np.zeros_like(x), 16_000, subtype="PCM_16")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "silence")
    assert any("silent" in m for m in named(report, CLIP))


def test_mostly_silent_clip_is_named(tiny_speech_data, tiny_speech_recipe):
    x = audio(tiny_speech_data)
    peak, keep = int(np.argmax(np.abs(x))), len(x) // 20
    x[: peak - keep // 2] = 0.0  # a twentieth of the clip, around its loudest sample, sounds
    x[peak + keep // 2 :] = 0.0
    sf.write(tiny_speech_data / CLIP, x, 16_000, subtype="PCM_16")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "silence")
    assert any("mostly silence" in m for m in named(report, CLIP))


def test_noise_without_speech_is_named(tiny_speech_data, tiny_speech_recipe):
    n = len(audio(tiny_speech_data))
    noise = 0.03 * np.random.default_rng(0).standard_normal(n)
    sf.write(tiny_speech_data / CLIP, noise, 16_000, subtype="PCM_16")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "loudness")
    assert any("estimated SNR" in m for m in named(report, CLIP))


def test_clipped_clip_is_named(tiny_speech_data, tiny_speech_recipe):
    x = audio(tiny_speech_data)
    x = np.clip(x / np.abs(x).max() * 4, -1, 1)  # 12 dB too hot
    sf.write(tiny_speech_data / CLIP, x, 16_000, subtype="PCM_16")
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "clipping")
    assert any("full scale" in m for m in named(report, CLIP))


def digit_clip(root: Path) -> dict:
    return next(c for c in load(root, "train") if c["text"].split()[0] in DIGITS)


@pytest.mark.parametrize(
    "spell",
    [
        lambda text: " ".join(str(DIGITS.index(w)) for w in text.split()),  # "3" for "three"
        lambda text: text.title(),  # "Three Four"
        lambda text: text.upper(),
        lambda text: f"  {text}!",
    ],
    ids=["digits", "title_case", "upper_case", "punctuation"],
)
def test_label_not_normalized_is_named(spell, tiny_speech_data, tiny_speech_recipe):
    clip = digit_clip(tiny_speech_data)
    edit(tiny_speech_data, clip["file"], text=spell(clip["text"]))
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "labels")
    messages = named(report, clip["file"])
    assert len(messages) == 1 and "not normalized" in messages[0]
    assert f"fix: {clip['text']!r}" in messages[0]


@pytest.mark.parametrize("text", ["turn left please", "MLOps", "m l ops"])
def test_out_of_vocabulary_word_is_named(text, tiny_speech_data, tiny_speech_recipe):
    file = "audio/test/test_00002.wav"
    edit(tiny_speech_data, file, text=text)
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "labels")
    assert any("outside the vocabulary" in m for m in named(report, file))
    assert report["summary"]["oov_words"] >= 1


def test_unnormalized_command_in_the_recipe_is_named(tiny_speech_data, tiny_speech_recipe):
    # YAML 1.1 reads a bare `- yes` as true: the command list would hold "True".
    recipe = tiny_speech_recipe()
    recipe.commands = [*recipe.commands, "True"]
    report = validate(recipe, tiny_speech_data)
    assert any("YAML boolean" in m for m in named(report, "recipe.json"))


def test_data_from_another_recipe_is_named(tiny_speech_data, tiny_speech_recipe):
    report = validate(tiny_speech_recipe({"seed": 7}), tiny_speech_data)
    only_check_failing(report, "files")
    assert any("another recipe" in m and "seed" in m for m in named(report, "recipe.json"))


def test_wrong_split_size_is_named(tiny_speech_data, tiny_speech_recipe):
    clips = load(tiny_speech_data, "val")
    (tiny_speech_data / clips[-1]["file"]).unlink()
    save(tiny_speech_data, "val", clips[:-1])
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "files")
    assert any("n_val=8" in m for m in named(report, "manifests/val.jsonl"))


def test_broken_manifest_lines_are_named(tiny_speech_data, tiny_speech_recipe):
    path = tiny_speech_data / "manifests/test.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = "{not json"
    lines[2] = json.dumps({"file": "audio/train/train_00000.wav", "text": "go", "voice": "x"})
    lines[3] = json.dumps(["not", "an", "object"])
    path.write_text("\n".join(lines) + "\n")
    (tiny_speech_data / "manifests/val.jsonl").unlink()
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    messages = named(report, "manifests/test.jsonl")
    for fragment in ("line 2: not JSON", "line 3: `duration_s`", "line 4: not a JSON object"):
        assert any(fragment in m for m in messages), messages
    assert any("missing" in m for m in named(report, "manifests/val.jsonl"))


def test_voice_leak_between_train_and_test_is_named(tiny_speech_data, tiny_speech_recipe):
    train_voice = load(tiny_speech_data, "train")[0]["voice"]
    file = "audio/test/test_00005.wav"
    edit(tiny_speech_data, file, voice=train_voice)
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "voices")
    variant = train_voice.partition("+")[2]
    assert any(f"{variant!r}" in m and "leaked" in m for m in named(report, file))


def test_duration_mismatch_is_named(tiny_speech_data, tiny_speech_recipe):
    file = "audio/train/train_00007.wav"
    clip = edit(tiny_speech_data, file)
    edit(tiny_speech_data, file, duration_s=clip["duration_s"] + 0.25)
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    only_check_failing(report, "duration")
    assert any("duration_s" in m for m in named(report, file))


@pytest.mark.parametrize("seconds", [0.0, 0.1, 11.0])
def test_empty_or_absurd_duration_is_named(seconds, tiny_speech_data, tiny_speech_recipe):
    n = int(seconds * 16_000)
    x = 0.1 * np.sin(np.arange(n) * 2 * np.pi * 200 / 16_000)  # a tone, so it is not silent
    sf.write(tiny_speech_data / CLIP, x, 16_000, subtype="PCM_16")
    edit(tiny_speech_data, CLIP, duration_s=seconds)
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    assert "duration" in failing(report)
    want = "empty" if n == 0 else "outside"
    assert any(want in m for m in named(report, CLIP)), report["problems"]


def test_problems_never_raise_on_garbage(tiny_speech_data, tiny_speech_recipe):
    clips = load(tiny_speech_data, "train")
    clips[0]["file"] = "../../etc/passwd"
    clips[1]["duration_s"] = float("nan")
    clips[2]["voice"] = "no-plus-sign"
    clips[3]["text"] = ""
    clips[4]["reverb"] = "maybe"
    clips[5]["snr_db"] = None
    save(tiny_speech_data, "train", clips)
    report = validate(tiny_speech_recipe(), tiny_speech_data)
    json.dumps(report)
    assert len(report["problems"]) >= 4
