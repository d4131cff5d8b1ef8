"""Validation of a speech dataset: every problem names the file and says what is wrong.

Checks: files (manifests, readable and complete audio, split sizes, the recipe), labels
(normalized transcripts in the recipe's vocabulary), duration, format (rate, channels, PCM_16),
clipping, silence, loudness/SNR by recording condition and held-out voices. Never raises on bad
data: the validate stage turns `report["problems"]` into a DataValidationError.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from liveml.data.findings import Findings
from liveml.tasks.speech.text import DIGITS, normalize

SPLITS = ("train", "val", "test")
CHECKS = ("files", "labels", "duration", "format", "clipping", "silence", "loudness", "voices")
SUBTYPE = "PCM_16"
MIN_DURATION_S, MAX_DURATION_S = 0.2, 10.0  # shorter or longer is no spoken command
DURATION_TOLERANCE_S = 0.005  # the manifest rounds duration_s to 0.1 ms
FULL_SCALE = 0.999  # |sample| at or above this (within 0.01 dB of full scale) is clipped
MAX_CLIPPED_SHARE = 0.001  # more clipped samples than this share is audible distortion
SILENT_DBFS = -60.0  # a whole clip this quiet holds no speech
QUIET_FRAME_DBFS = -60.0  # frames below this count as silence
MIN_SOUNDING_SHARE = 0.1  # a clip with fewer sounding frames than this is mostly silence
MIN_SNR_DB = 0.0  # estimated SNR below this: the noise drowns the speech (or there is none)
FRAME = 0.02  # seconds per analysis frame
NOISE_QUANTILE = 0.1  # the quietest 10% of frames stand for the noise (pads, pauses)
SNR_BUCKETS = (10.0, 20.0, 30.0)  # snr_db group edges, as in evaluation.SNR_BUCKETS
PERCENTILES = (5, 50, 95)
REQUIRED = {"file": str, "text": str, "voice": str, "duration_s": (int, float)}


@dataclass
class Clip:
    """One manifest line that passed the schema check, plus what its audio measured."""

    split: str
    file: str  # relative to the data folder, as in the manifest
    text: str
    voice: str
    duration_s: float
    meta: dict  # the manifest line (recording conditions)
    seconds: float | None = None  # measured; None when the audio could not be read
    rms_dbfs: float | None = None
    snr_est_db: float | None = None


def validate(data: Any, data_dir: Path) -> dict:
    """Check the dataset in `data_dir` against the recipe `data`; return {ok, problems, checks,
    summary, splits, vocabulary, snr_by_condition} (JSON-ready, summaries only)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data folder {data_dir} does not exist; fix: generate it (`dvc repro generate`)."
        )
    findings = Findings(data_dir, CHECKS)
    recipe = _plain(data)
    check_recipe(recipe, data_dir, findings)
    splits = {split: load_manifest(data_dir, split, recipe, findings) for split in SPLITS}
    check_extra_files(data_dir, splits, findings)
    clips = [c for split in SPLITS for c in splits[split] or []]
    for clip in clips:
        check_audio(data_dir, clip, int(recipe["sample_rate"]), findings)
    vocabulary = check_labels(clips, recipe, findings)
    voices = check_voices(splits, findings)
    problems = findings.problems()
    sections = {
        "splits": {split: _split_summary(splits[split] or []) for split in SPLITS},
        "vocabulary": vocabulary,
        "voices": voices,
        "snr_by_condition": _snr_by_condition(clips),
    }
    return {
        "ok": not problems,
        "problems": problems,
        "checks": findings.checks(),
        "summary": _summary(sections, clips, len(problems)),
        **sections,
    }


def _plain(data: Any) -> dict:
    if isinstance(data, dict):
        return data
    from omegaconf import OmegaConf

    return OmegaConf.to_container(data, resolve=True)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# 1. Files: the recipe, the manifests, split sizes, missing and extra audio


def check_recipe(recipe: dict, data_dir: Path, findings: Findings) -> None:
    """recipe.json must be the recipe we validate against (else the data is stale), and the
    recipe's commands must already be normalized (else labels and vocabulary disagree)."""
    path = data_dir / "recipe.json"
    try:
        written = json.loads(path.read_text())
    except FileNotFoundError:
        findings.add("files", "recipe.json", "missing: the recipe the data was made from")
        written = None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        findings.add("files", "recipe.json", f"not readable JSON: {e}")
        written = None
    if isinstance(written, dict):
        differ = sorted(k for k in set(recipe) | set(written) if recipe.get(k) != written.get(k))
        if differ:
            findings.add(
                "files",
                "recipe.json",
                f"the data was generated from another recipe (differs in {differ}); "
                "fix: regenerate it (`dvc repro -f generate`)",
            )
    for command in recipe.get("commands", []):
        if not isinstance(command, str) or normalize(command) != command:
            hint = ""
            if str(command) in ("True", "False"):  # YAML 1.1 reads bare yes/no/on/off as bools
                hint = " (a YAML boolean: quote yes/no/on/off in conf/data/*.yaml)"
            findings.add(
                "labels",
                "recipe.json",
                f"command {command!r} of data.commands is not normalized{hint}; fix: write it "
                f"as {normalize(str(command))!r}",
            )


def load_manifest(data_dir: Path, split: str, recipe: dict, findings: Findings):
    """Parse manifests/<split>.jsonl into Clips (None when the manifest is unusable)."""
    rel = f"manifests/{split}.jsonl"
    try:
        lines = (data_dir / rel).read_text().splitlines()
    except FileNotFoundError:
        findings.add("files", rel, "missing: the split's manifest is not there")
        return None
    except (OSError, UnicodeDecodeError) as e:
        findings.add("files", rel, f"not readable: {e}")
        return None
    clips, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            findings.add("files", rel, f"line {number}: not JSON ({e})")
            continue
        why = _entry_problem(entry, split)
        if why is not None:
            findings.add("files", rel, f"line {number}: {why}")
            continue
        if entry["file"] in seen:
            findings.add("files", entry["file"], f"listed twice in {rel}")
            continue
        seen.add(entry["file"])
        clips.append(
            Clip(split, entry["file"], entry["text"], entry["voice"], entry["duration_s"], entry)
        )
    from liveml.tasks.speech.feedback import merged_train

    entries, want = sum(1 for line in lines if line.strip()), int(recipe[f"n_{split}"])
    if split == "train":  # labelled production clips the generate stage appended
        want += merged_train(data_dir)
    if entries != want:
        findings.add("files", rel, f"lists {entries} clips, the recipe asks n_{split}={want}")
    return clips


def _entry_problem(entry: Any, split: str) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    for key, kind in REQUIRED.items():
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            return f"`{key}` missing or of the wrong type: {entry.get(key)!r}"
    if not math.isfinite(entry["duration_s"]):
        return f"duration_s {entry['duration_s']!r} is not finite"
    path = PurePosixPath(entry["file"])
    if path.is_absolute() or ".." in path.parts or path.parent != PurePosixPath("audio", split):
        return f"file {entry['file']!r} does not lie in audio/{split}/"
    return None


def check_extra_files(data_dir: Path, splits: dict, findings: Findings) -> None:
    """Audio on disk that no manifest lists: unlabelled clips, or a manifest line lost."""
    for split, clips in splits.items():
        folder = data_dir / "audio" / split
        if clips is None or not folder.is_dir():
            continue  # no manifest to compare with: reported already
        listed = {c.file for c in clips}
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(data_dir).as_posix()
            if path.is_file() and rel not in listed:
                findings.add("files", rel, f"extra: on disk but not in manifests/{split}.jsonl")


# ---------------------------------------------------------------------------------------------
# 2. Audio: readable and complete, format, duration, clipping, silence, loudness and SNR


def check_audio(data_dir: Path, clip: Clip, sample_rate: int, findings: Findings) -> None:
    """Read the clip once; check its header, format, duration and levels; store measurements."""
    import soundfile as sf

    try:
        raw = (data_dir / clip.file).read_bytes()
    except FileNotFoundError:
        findings.add("files", clip.file, f"missing: listed in manifests/{clip.split}.jsonl")
        return
    except OSError as e:
        findings.add("files", clip.file, f"not readable: {e}")
        return
    truncated = _truncation(raw)
    if truncated is not None:
        findings.add("files", clip.file, truncated)
    try:
        with sf.SoundFile(io.BytesIO(raw)) as f:
            rate, channels, subtype, container = f.samplerate, f.channels, f.subtype, f.format
            x = f.read(dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several kinds on corrupt data: all mean unreadable
        why = getattr(e, "error_string", None) or str(e)  # not libsndfile's "<BytesIO at 0x..>"
        findings.add("files", clip.file, f"cannot be decoded ({type(e).__name__}: {why})")
        return
    if (container, subtype, rate, channels) != ("WAV", SUBTYPE, sample_rate, 1):
        findings.add(
            "format",
            clip.file,
            f"is {container} {subtype}, {rate} Hz, {channels} channel(s); the recipe asks "
            f"WAV {SUBTYPE}, {sample_rate} Hz, mono",
        )
    x = x.mean(axis=1) if channels > 1 else x[:, 0]
    if not np.isfinite(x).all():
        findings.add("format", clip.file, "holds non-finite samples (NaN or inf)")
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    clip.seconds = len(x) / rate
    _check_duration(clip, findings)
    _check_levels(clip, x, rate, findings)


def _truncation(raw: bytes) -> str | None:
    """Why a RIFF/WAVE file is cut short (None if complete or not RIFF). libsndfile reads a
    truncated file without error, returning fewer samples, so the header sizes decide."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            held = len(raw) - pos - 8
            if size > held:
                return f"truncated: the header declares {size} bytes of audio, the file has {held}"
            return None
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return "truncated: no complete `data` chunk"


def _check_duration(clip: Clip, findings: Findings) -> None:
    seconds = clip.seconds
    if seconds == 0:
        findings.add("duration", clip.file, "empty: 0 samples")
    elif seconds < MIN_DURATION_S or seconds > MAX_DURATION_S:
        findings.add(
            "duration",
            clip.file,
            f"lasts {seconds:.3f} s, outside [{MIN_DURATION_S}, {MAX_DURATION_S}] s",
        )
    if abs(seconds - clip.duration_s) > DURATION_TOLERANCE_S:
        findings.add(
            "duration",
            clip.file,
            f"lasts {seconds:.4f} s, manifests/{clip.split}.jsonl says duration_s="
            f"{clip.duration_s}",
        )


def _check_levels(clip: Clip, x: np.ndarray, rate: int, findings: Findings) -> None:
    if not len(x):
        return
    clipped = float(np.mean(np.abs(x) >= FULL_SCALE))
    if clipped > MAX_CLIPPED_SHARE:
        findings.add(
            "clipping",
            clip.file,
            f"{clipped:.2%} of samples at full scale (max {MAX_CLIPPED_SHARE:.1%}): clipped, "
            "lower the gain",
        )
    power = x.astype(np.float64) ** 2
    clip.rms_dbfs = _db(float(power.mean()))
    frames = frame_powers(power, rate)
    clip.snr_est_db = estimate_snr(frames)
    sounding = float(np.mean(frames > 10 ** (QUIET_FRAME_DBFS / 10)))
    if clip.rms_dbfs < SILENT_DBFS:
        findings.add(
            "silence", clip.file, f"silent: RMS {clip.rms_dbfs:.1f} dBFS (< {SILENT_DBFS:g})"
        )
    elif sounding < MIN_SOUNDING_SHARE:
        findings.add(
            "silence",
            clip.file,
            f"mostly silence: {sounding:.0%} of frames above {QUIET_FRAME_DBFS:g} dBFS "
            f"(min {MIN_SOUNDING_SHARE:.0%})",
        )
    elif clip.snr_est_db < MIN_SNR_DB:
        findings.add(
            "loudness",
            clip.file,
            f"estimated SNR {clip.snr_est_db:.1f} dB (< {MIN_SNR_DB:g}): noise drowns the "
            "speech, or there is no speech",
        )


def frame_powers(power: np.ndarray, rate: int) -> np.ndarray:
    """Mean power of consecutive FRAME-long frames (the last partial frame dropped)."""
    n = max(1, int(FRAME * rate))
    if len(power) < n:
        return np.array([power.mean()])
    return power[: len(power) // n * n].reshape(-1, n).mean(axis=1)


def estimate_snr(frames: np.ndarray) -> float:
    """SNR from the audio alone: the quietest frames (pads, pauses) are noise; the louder half
    is speech plus noise. Tracks the recipe's snr_db, a few dB high; stationary noise only."""
    ordered = np.sort(frames)
    noise = ordered[: max(1, int(len(ordered) * NOISE_QUANTILE))].mean()
    speech = ordered[len(ordered) // 2 :].mean() - noise
    return _db(max(float(speech), 1e-20) / max(float(noise), 1e-20))


def _db(ratio: float) -> float:
    return 10 * math.log10(max(ratio, 1e-20))


# ---------------------------------------------------------------------------------------------
# 3. Labels: normalized, in the recipe's vocabulary


def check_labels(clips: list[Clip], recipe: dict, findings: Findings) -> dict:
    """Flag transcripts that are not in normalized form or use words outside the vocabulary
    (digit words and the words of data.commands); return the vocabulary with word counts."""
    vocabulary = set(DIGITS) | {
        w for c in recipe.get("commands", []) for w in normalize(str(c)).split()
    }
    counts = {split: Counter() for split in SPLITS}
    oov: Counter = Counter()
    for clip in clips:
        words = clip.text.split()
        counts[clip.split].update(words)
        fixed = normalize(clip.text)
        if not fixed:
            findings.add("labels", clip.file, f"empty transcript {clip.text!r}")
            continue
        if fixed != clip.text:
            findings.add(
                "labels",
                clip.file,
                f"transcript {clip.text!r} is not normalized; fix: {fixed!r} (text.normalize)",
            )
        unknown = sorted(set(fixed.split()) - vocabulary)
        if unknown:
            oov.update(w for w in fixed.split() if w in unknown)
            findings.add(
                "labels",
                clip.file,
                f"transcript {clip.text!r} has words outside the vocabulary: {unknown}; fix: "
                "correct the transcript, or add the command to data.commands",
            )
    total = sum(counts.values(), Counter())
    return {
        "size": len(vocabulary),
        "word_counts": {w: total.get(w, 0) for w in sorted(vocabulary)},
        "unseen_in_train": sorted(w for w in vocabulary if not counts["train"].get(w)),
        "oov_words": dict(sorted(oov.items())),
        "words_per_split": {s: sum(counts[s].values()) for s in SPLITS},
    }


# ---------------------------------------------------------------------------------------------
# 4. Held-out voices


def check_voices(splits: dict, findings: Findings) -> dict:
    """Voice variants of val and test must never speak in train; returns voices per split."""
    variants: dict[str, Counter] = {s: Counter() for s in SPLITS}
    accents: dict[str, Counter] = {s: Counter() for s in SPLITS}
    first_in_train: dict[str, str] = {}
    for split in SPLITS:
        for clip in splits[split] or []:
            accent, plus, variant = clip.voice.partition("+")
            if not plus or not accent or not variant:
                findings.add(
                    "voices",
                    clip.file,
                    f"voice {clip.voice!r} is not 'accent+variant' (e.g. 'en-us+m3')",
                )
                continue
            variants[split][variant] += 1
            accents[split][accent] += 1
            if split == "train":
                first_in_train.setdefault(variant, clip.file)
            elif variant in first_in_train:
                findings.add(
                    "voices",
                    clip.file,
                    f"voice variant {variant!r} of this {split} clip also speaks in train (e.g. "
                    f"{first_in_train[variant]}): held-out voice leaked; fix: keep "
                    "data.voices lists disjoint and regenerate",
                )
    return {
        split: {
            "variants": len(variants[split]),
            "accents": dict(sorted(accents[split].items())),
        }
        for split in SPLITS
    }


# ---------------------------------------------------------------------------------------------
# Report sections


def _stats(values: list[float], digits: int = 3) -> dict:
    if not values:
        return {}
    v = np.asarray(values, dtype=np.float64)
    out = {"mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max()}
    out |= dict(zip((f"p{p}" for p in PERCENTILES), np.percentile(v, PERCENTILES), strict=True))
    return {k: round(float(x), digits) for k, x in out.items()}


def _split_summary(clips: list[Clip]) -> dict:
    seconds = [c.seconds for c in clips if c.seconds is not None]
    return {
        "clips": len(clips),
        "hours": round(sum(seconds) / 3600, 4),
        "duration_s": _stats(seconds),
        "rms_dbfs": _stats([c.rms_dbfs for c in clips if c.rms_dbfs is not None], 2),
        "snr_est_db": _stats([c.snr_est_db for c in clips if c.snr_est_db is not None], 2),
    }


def _snr_bucket(snr: Any) -> str:
    """The manifest's snr_db as a range, labelled as evaluation's cer_by_condition does."""
    if not isinstance(snr, int | float) or isinstance(snr, bool) or not math.isfinite(snr):
        return "unknown"
    if snr < SNR_BUCKETS[0]:
        return f"<{SNR_BUCKETS[0]:g} dB"
    for lo, hi in itertools.pairwise(SNR_BUCKETS):
        if snr < hi:
            return f"{lo:g}-{hi:g} dB"
    return f">={SNR_BUCKETS[-1]:g} dB"


def _snr_by_condition(clips: list[Clip]) -> dict:
    """Estimated SNR and loudness grouped by recording condition from the manifests."""
    groupings = {
        "reverb": lambda c: {True: "yes", False: "no"}.get(c.meta.get("reverb"), "unknown"),
        "snr_db": lambda c: _snr_bucket(c.meta.get("snr_db")),
        "accent": lambda c: c.voice.partition("+")[0] or "unknown",
    }
    measured = [c for c in clips if c.snr_est_db is not None]
    out: dict[str, dict] = {}
    for name, key in groupings.items():
        groups: dict[str, list[Clip]] = {}
        for clip in measured:
            groups.setdefault(key(clip), []).append(clip)
        out[name] = {
            group: {
                "clips": len(members),
                "snr_est_db": round(float(np.mean([c.snr_est_db for c in members])), 2),
                "rms_dbfs": round(float(np.mean([c.rms_dbfs for c in members])), 2),
            }
            for group, members in sorted(groups.items())
        }
    return out


def _summary(sections: dict, clips: list[Clip], n_problems: int) -> dict:
    """Flat numbers for DVC metrics."""
    summary: dict[str, float | int] = {}
    for split, s in sections["splits"].items():
        summary[f"clips_{split}"] = s["clips"]
        summary[f"hours_{split}"] = s["hours"]
    measured = [c for c in clips if c.seconds is not None]
    summary["duration_mean_s"] = _stats([c.seconds for c in measured]).get("mean", 0.0)
    levels = [c for c in measured if c.rms_dbfs is not None]
    summary["rms_dbfs_mean"] = _stats([c.rms_dbfs for c in levels], 2).get("mean", 0.0)
    summary["snr_est_db_mean"] = _stats([c.snr_est_db for c in levels], 2).get("mean", 0.0)
    summary["vocabulary_size"] = sections["vocabulary"]["size"]
    summary["oov_words"] = sum(sections["vocabulary"]["oov_words"].values())
    for split, v in sections["voices"].items():
        summary[f"voices_{split}"] = v["variants"]
    summary["problems"] = n_problems
    return summary
