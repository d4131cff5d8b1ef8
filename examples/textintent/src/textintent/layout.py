"""The dataset on disk: one UTF-8 `.txt` file per message, one JSON-lines manifest per split.

    <data_dir>/texts/<split>/<stem>.txt   the message, exactly the bytes a client sends
    <data_dir>/labels/<split>.jsonl       {"file": "texts/<split>/<stem>.txt", "intent": ...}

A message file holds exactly the bytes of a request, so a captured request has the sha256 of
its file (that is how feedback finds its label). The manifest keeps the order and every other
label key (the framework adds e.g. "sha256", "source", "feedback").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from liveml.core.atomic import atomic_dir, atomic_write_text
from liveml.tasks.base import Example

TEXTS = "texts"
LABELS = "labels"
SUFFIX = ".txt"
_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def manifest_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / LABELS / f"{split}.jsonl"


def read_manifest(data_dir: Path, split: str) -> list[dict]:
    """The manifest rows of a split; FileNotFoundError naming the fix when it is missing."""
    path = manifest_path(data_dir, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {data_dir} holds no {split!r} split of the textintent layout; "
            "fix: regenerate the data (`dvc repro -f generate`) or pass a textintent dataset."
        )
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def read_split(data_dir: Path, split: str) -> list[Example]:
    """The examples of one split in manifest order; the label is the row without "file"."""
    data_dir = Path(data_dir)
    out = []
    for row in read_manifest(data_dir, split):
        path = data_dir / row["file"]
        out.append(Example(path, {k: v for k, v in row.items() if k != "file"}, stem=path.stem))
    return out


def write_texts(data_dir: Path, split: str, rows: list[tuple[str, bytes, dict]]) -> None:
    """Write split `split` of `data_dir` from (stem, message bytes, label) rows, replacing any
    split of that name: its text folder is built aside and swapped in whole, then the
    manifest is replaced."""
    data_dir = Path(data_dir)
    lines = []
    with atomic_dir(data_dir / TEXTS / split) as tmp:
        for stem, data, label in rows:
            (tmp / f"{stem}{SUFFIX}").write_bytes(data)
            lines.append(json.dumps({"file": f"{TEXTS}/{split}/{stem}{SUFFIX}", **label}) + "\n")
    atomic_write_text(manifest_path(data_dir, split), "".join(lines))


def write_split(data_dir: Path, split: str, examples: list[Example]) -> None:
    """Write `examples` as split `split`: each input's bytes stored as `<stem>.txt` (numbered
    `<split>_00000` ... when the example has no stem), its label in the manifest.

    Everything is read and checked first (ValueError naming the problem), so a bad example
    writes nothing, and the examples may come from the very split being replaced."""
    rows: list[tuple[str, bytes, dict]] = []
    seen: set[str] = set()
    for i, e in enumerate(examples):
        stem = e.stem if e.stem is not None else f"{split}_{i:05d}"
        label = dict(e.label)
        problem = None
        if not isinstance(label.get("intent"), str):
            problem = "its label has no 'intent' string; give it {'intent': <a task class>}"
        elif "file" in label:
            problem = "its label has a 'file' key, which the manifest itself uses; rename it"
        elif not _STEM.fullmatch(stem):
            problem = f"stem {stem!r} is not a plain file name (letters, digits, . _ -)"
        elif stem in seen:
            problem = f"stem {stem!r} is used twice in the split; give each example its own"
        if problem:
            raise ValueError(f"cannot write example {i} ({e.input}) to split {split!r}: {problem}")
        seen.add(stem)
        rows.append((stem, Path(e.input).read_bytes(), label))
    write_texts(Path(data_dir), split, rows)
