"""The speech task's dataset layout as examples, and what feedback needs from the task: the
generator's ground truth, held-out voices, the merge rules, the headline score.

Layout: `audio/<split>/<stem>.wav` and `manifests/<split>.jsonl` (one JSON row per clip:
file, text, voice, conditions, duration_s); `recipe.json` holds the recipe. An example's label
is its manifest row without "file"; rewriting a split as read leaves it byte-identical.

The traffic sent to the server comes from folders the speech generator wrote, so a captured
clip is labelled by the generator's ground truth: the manifest row of the WAV with the same
sha256 there. Held-out voices stay held out: a clip spoken by a val/test voice never enters
train.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from liveml.data.feedback import DATA_SPLITS, sha256_file
from liveml.data.feedback import merged_train as merged_train
from liveml.tasks.base import Example

HELD_OUT_SPLITS = ("val", "test")  # recipe voice lists that must never speak in train
# What speech validation accepts (checks.SUBTYPE, mono WAV); the rate comes from the recipe.
CONTAINER, SUBTYPE, CHANNELS = "WAV", "PCM_16", 1


def _variant(voice: str) -> str:
    return voice.partition("+")[2]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _held_out_variants(recipe: Any) -> set[str] | None:
    """The val/test voice variants of a recipe (None when the recipe is unknown)."""
    if not isinstance(recipe, dict) or not isinstance(recipe.get("voices"), dict):
        return None
    return {str(v) for split in HELD_OUT_SPLITS for v in recipe["voices"].get(split, [])}


def _manifest_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "manifests" / f"{split}.jsonl"


def read_split(data_dir: Path, split: str) -> list[Example]:
    """The clips of one split, in manifest order."""
    data_dir = Path(data_dir)
    path = _manifest_path(data_dir, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: no split {split!r} there; fix: pass a dataset folder in the "
            "speech layout (made by its generator or by liveml.data.feedback.write_version) "
            "and one of its splits."
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        Example(
            data_dir / row["file"],
            {k: v for k, v in row.items() if k != "file"},
            stem=Path(row["file"]).stem,
        )
        for row in rows
    ]


def write_split(data_dir: Path, split: str, examples: list[Example]) -> None:
    """Write `examples` as `split`: clips under audio/<split>/, the manifest last."""
    from liveml.core.atomic import atomic_write_text

    data_dir = Path(data_dir)
    lines, copies, names = [], [], set()
    for i, example in enumerate(examples):
        name = f"audio/{split}/{example.stem or f'{split}_{i:05d}'}.wav"
        if name in names:
            raise ValueError(f"two examples of split {split!r} would both be stored as {name}")
        names.add(name)
        lines.append(json.dumps({"file": name, **example.label}))
        copies.append((Path(example.input), data_dir / name))
    (data_dir / "audio" / split).mkdir(parents=True, exist_ok=True)
    for src, dest in copies:
        if not (dest.exists() and os.path.samefile(src, dest)):
            shutil.copyfile(src, dest)
    (data_dir / "manifests").mkdir(parents=True, exist_ok=True)
    # As the generator writes it: one line per clip, each ended by a newline.
    atomic_write_text(_manifest_path(data_dir, split), "".join(line + "\n" for line in lines))


def ground_truth(source_dirs: list[Path]) -> dict[str, dict]:
    """sha256 of every clip in generator-made datasets (all splits) -> its label (manifest
    row without "file") plus "source": {"dir", "split", "file", "held_out_voice"}, where
    held_out_voice says whether the clip's voice variant is in the source recipe's val/test
    lists (None without recipe.json). The first folder holding given bytes wins."""
    truth: dict[str, dict] = {}
    for source in map(Path, source_dirs):
        held_out = _held_out_variants(_read_json(source / "recipe.json"))
        found = False
        for split in DATA_SPLITS:
            if not _manifest_path(source, split).is_file():
                continue
            found = True
            for example in read_split(source, split):
                voice = example.label["voice"]
                held = None if held_out is None else _variant(voice) in held_out
                where = {
                    "dir": str(source),
                    "split": split,
                    "file": example.input.relative_to(source).as_posix(),
                    "held_out_voice": held,
                }
                truth.setdefault(sha256_file(example.input), {**example.label, "source": where})
        if not found:
            raise FileNotFoundError(
                f"{source} holds no manifests/<split>.jsonl; fix: pass folders written by the "
                "speech generator (`get_task('speech').generate(cfg, out_dir)`)."
            )
    return truth


def must_hold_out(label: dict) -> str | None:
    """ "held_out_voice" for a clip spoken by a val/test voice of its source recipe: in train
    it would leak that speaker."""
    return "held_out_voice" if (label.get("source") or {}).get("held_out_voice") is True else None


def feedback_rejects(data_dir: Path, examples: list[Example]) -> list[str | None]:
    """ "held_out_voice" for a clip spoken by a val/test voice of the data's recipe, "format"
    for one in another format than the recipe's (16-bit PCM mono WAV at its rate)."""
    import soundfile as sf

    recipe = _read_json(Path(data_dir) / "recipe.json")
    held_out = _held_out_variants(recipe) or set()
    rate = recipe.get("sample_rate") if isinstance(recipe, dict) else None
    out: list[str | None] = []
    for example in examples:
        info = sf.info(str(example.input))
        if _variant(example.label["voice"]) in held_out:
            out.append("held_out_voice")
        elif (info.format, info.subtype, info.channels) != (CONTAINER, SUBTYPE, CHANNELS) or (
            rate is not None and info.samplerate != rate
        ):
            out.append("format")
        else:
            out.append(None)
    return out


def quality_metrics(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> dict:
    """{"cer", "wer"} of a recognizer (anything with `transcribe`) on one split of a dataset
    in the speech layout (the pipeline's data or a feedback version)."""
    from liveml.tasks.speech.evaluation import load_split
    from liveml.tasks.speech.evaluation import quality as asr_quality

    read_split(Path(data_dir), split)  # a missing split: the error with the fix
    waves, rows = load_split(Path(data_dir), split)
    hyps = module.transcribe(waves, batch_size=int(cfg.model.batch_size))
    q = asr_quality(hyps, rows)
    return {"cer": q["cer"], "wer": q["wer"]}


def quality(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> float:
    """Character error rate of a recognizer on one split (the headline metric)."""
    return quality_metrics(cfg, module, data_dir, split)["cer"]
