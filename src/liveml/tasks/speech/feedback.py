"""Labelled feedback data of the speech task: captured production clips, labelled, versioned
and merged into the training data, so a retrained challenger learns the drifted inputs.

The traffic sent to the server comes from folders the speech generator wrote, so a captured
clip is labelled by the generator's ground truth: the manifest row of the WAV with the same
sha256 there. A feedback version is a dataset in the task's layout with splits `train` and
`test`; `merge` appends versions' train splits to freshly generated data (the generate stage's
output). Held-out voices stay held out: a clip spoken by a val/test voice never enters train.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from liveml.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from liveml.data.feedback import (
    VERSION_SPLITS,
    in_holdout,
    label,
    sha256_file,
    version_name,
)

__all__ = ["ground_truth", "in_holdout", "merge", "merged_train", "quality", "write_version"]

SPLITS = ("train", "val", "test")  # what the generator writes
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


def _manifest(data_dir: Path, split: str) -> list[dict] | None:
    path = Path(data_dir) / "manifests" / f"{split}.jsonl"
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ground_truth(source_dirs: list[Path]) -> dict[str, dict]:
    """sha256 of every clip in generator-made datasets (all splits) -> its manifest row plus
    "source": {"dir", "split", "file", "held_out_voice"}, where held_out_voice says whether the
    clip's voice variant is in the source recipe's val/test lists (None without recipe.json).
    The first folder holding given bytes wins."""
    truth: dict[str, dict] = {}
    for source in map(Path, source_dirs):
        held_out = _held_out_variants(_read_json(source / "recipe.json"))
        found = False
        for split in SPLITS:
            rows = _manifest(source, split)
            if rows is None:
                continue
            found = True
            for row in rows:
                held = None if held_out is None else _variant(row["voice"]) in held_out
                where = {"dir": str(source), "split": split, "file": row["file"]}
                truth.setdefault(
                    sha256_file(source / row["file"]),
                    {**row, "source": where | {"held_out_voice": held}},
                )
        if not found:
            raise FileNotFoundError(
                f"{source} holds no manifests/<split>.jsonl; fix: pass folders written by the "
                "speech generator (`get_task('speech').generate(cfg, out_dir)`)."
            )
    return truth


def write_version(
    inputs: list[Path],
    truth: dict[str, dict],
    out_dir: Path,
    *,
    holdout: float = 0.3,
    provenance: dict | None = None,
) -> dict:
    """Write the labelled `inputs` as a dataset (splits train/test, manifests) at `out_dir`.

    Bytes are copied unchanged; the test split is the `holdout` share chosen by `in_holdout`,
    plus every clip spoken by a held-out voice of its source recipe (counted as
    "held_out_voice"): in train it would leak that speaker. Inputs without a label are skipped
    and counted, as are repeats of the same bytes. `provenance` (e.g. the capture records and
    drift report) goes to provenance.json, which `merge` lists. Written atomically. Returns
    {"train", "test", "unlabelled", "duplicates", "held_out_voice", "inputs"} counts.
    """
    labelled, unlabelled, duplicates = label(inputs, truth, holdout, "clips")
    splits: dict[str, list[str]] = {split: [] for split in VERSION_SPLITS}
    held_out_voice = 0
    for sha in sorted(labelled):  # by hash: the same inputs give the same folder in any order
        held = labelled[sha][1]["source"].get("held_out_voice") is True
        held_out_voice += held
        splits["test" if held or in_holdout(sha, holdout) else "train"].append(sha)
    with atomic_dir(out_dir) as tmp:
        (tmp / "manifests").mkdir()
        for split, shas in splits.items():
            (tmp / "audio" / split).mkdir(parents=True)
            lines = []
            for i, sha in enumerate(shas):
                path, rec = labelled[sha]
                name = f"audio/{split}/{split}_{i:05d}.wav"
                shutil.copyfile(path, tmp / name)
                lines.append(json.dumps({**rec, "file": name, "sha256": sha}))
            _write_manifest(tmp / "manifests" / f"{split}.jsonl", lines)
        if provenance is not None:
            atomic_write_json(tmp / "provenance.json", provenance)
    return {
        "train": len(splits["train"]),
        "test": len(splits["test"]),
        "unlabelled": unlabelled,
        "duplicates": duplicates,
        "held_out_voice": held_out_voice,
        "inputs": len(inputs),
    }


def _write_manifest(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))  # as the generator writes


def merge(data_dir: Path, versions: list[Path]) -> dict:
    """Append every version's train split to the dataset at `data_dir`, in place.

    Clips become `audio/train/fb-<version>-<i>.wav`, their rows are appended to
    manifests/train.jsonl. Skipped (and counted per version): bytes already in the data (any
    split), clips spoken by a val/test voice of the data's recipe ("held_out_voice") and clips
    in another format than the recipe's ("format"). Writes data_dir/feedback.json
    ([{version, train, skipped, provenance}]). `versions == []` changes nothing. Returns
    {"train": appended, "versions": those entries}.
    """
    import soundfile as sf

    data_dir = Path(data_dir)
    if not versions:
        return {"train": 0, "versions": []}
    recipe = _read_json(data_dir / "recipe.json")
    held_out = _held_out_variants(recipe) or set()
    rate = recipe.get("sample_rate") if isinstance(recipe, dict) else None
    # Everything read and checked first: a bad version must not leave the data half merged.
    loaded = [
        (
            version_name(v, versions),
            Path(v),
            _version_train(v),
            _read_json(Path(v) / "provenance.json"),
        )
        for v in versions
    ]
    manifest = data_dir / "manifests" / "train.jsonl"
    lines = [line for line in manifest.read_text().splitlines() if line.strip()]
    seen = {  # every clip already in the data, all splits
        sha256_file(data_dir / row["file"])
        for split in SPLITS
        for row in _manifest(data_dir, split) or []
    }
    entries = []
    for name, version, rows, provenance in loaded:
        skipped = {"duplicate": 0, "held_out_voice": 0, "format": 0}
        appended = 0
        for row in rows:
            src = version / row["file"]
            sha = sha256_file(src)
            info = sf.info(str(src))
            if sha in seen:
                skipped["duplicate"] += 1
            elif _variant(row["voice"]) in held_out:
                skipped["held_out_voice"] += 1
            elif (info.format, info.subtype, info.channels) != (CONTAINER, SUBTYPE, CHANNELS) or (
                rate is not None and info.samplerate != rate
            ):
                skipped["format"] += 1
            else:
                seen.add(sha)
                dest = f"audio/train/fb-{name}-{appended:05d}.wav"
                shutil.copyfile(src, data_dir / dest)
                lines.append(json.dumps({**row, "file": dest, "sha256": sha, "feedback": name}))
                appended += 1
        entries.append(
            {"version": name, "train": appended, "skipped": skipped, "provenance": provenance}
        )
    _write_manifest(manifest, lines)
    atomic_write_json(data_dir / "feedback.json", entries)
    return {"train": sum(e["train"] for e in entries), "versions": entries}


def merged_train(data_dir: Path) -> int:
    """Train clips `merge` appended to the data at `data_dir` (0 without feedback.json): what
    validation must add to the recipe's n_train when it counts manifest lines."""
    entries = _read_json(Path(data_dir) / "feedback.json")
    return sum(int(e["train"]) for e in entries) if isinstance(entries, list) else 0


def _version_train(version: Path) -> list[dict]:
    rows = _manifest(Path(version), "train")
    if rows is None:
        raise FileNotFoundError(
            f"{Path(version) / 'manifests' / 'train.jsonl'} is missing; fix: pass folders "
            "written by feedback.write_version."
        )
    return rows


def quality(cfg: Any, module: Any, data_dir: Path, split: str = "test") -> dict:
    """Character error rate of a recognizer on one split of a dataset in the speech layout
    (the pipeline's data or a feedback version): {"metric", "value", "higher_is_better", "n",
    "wer"}."""
    from liveml.tasks.speech.evaluation import load_split
    from liveml.tasks.speech.evaluation import quality as asr_quality

    rows = _manifest(Path(data_dir), split)
    where = Path(data_dir) / "manifests" / f"{split}.jsonl"
    if rows is None:
        raise FileNotFoundError(
            f"{where} is missing; fix: pass a speech dataset folder and one of its splits."
        )
    if not rows:
        raise ValueError(
            f"{where} lists no clips, so there is nothing to score; fix: label more inputs or "
            "use a larger holdout."
        )
    waves, rows = load_split(Path(data_dir), split)
    hyps = module.transcribe(waves, batch_size=int(cfg.model.batch_size))
    q = asr_quality(hyps, rows)
    return {
        "metric": "cer",
        "value": q["cer"],
        "higher_is_better": False,
        "n": len(rows),
        "wer": q["wer"],
    }
