"""Labels for production messages: a captured request is the bytes of a message file some
dataset holds (the traffic was sent from such folders), so its label is that file's. And the
rule for merging labelled messages into training data: no message the data already holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

from liveml.tasks.base import Example

from textintent.layout import manifest_path, read_split
from textintent.synth import SPLITS, normalized


def ground_truth(source_dirs: list[Path]) -> dict[str, dict]:
    """{sha256 of a message file: its label record plus "source" (dir, split, file)} over
    every split of every folder; the first folder holding given bytes wins."""
    truth: dict[str, dict] = {}
    for source in map(Path, source_dirs):
        splits = [s for s in SPLITS if manifest_path(source, s).is_file()]
        if not splits:
            raise FileNotFoundError(
                f"{source} holds no labels/<split>.jsonl; fix: pass dataset folders in the "
                "textintent layout (written by the task's generate or write_split)."
            )
        for split in splits:
            for example in read_split(source, split):
                sha = hashlib.sha256(example.input.read_bytes()).hexdigest()
                source_info = {
                    "dir": str(source),
                    "split": split,
                    "file": str(example.input.relative_to(source)),
                }
                truth.setdefault(sha, {**example.label, "source": source_info})
    return truth


def rejects(data_dir: Path, examples: list[Example]) -> list[str | None]:
    """Per feedback example about to join the train split of `data_dir`: "same_text" when its
    message is already in the data (any split) or earlier in `examples`, compared as the
    validation compares (case and spacing aside), else None. Byte-identical copies are
    liveml's own "duplicate"; this also keeps a SHOUTED copy of a test message out of train.
    ValueError when an example's intent is none of the data's (labels of another task)."""
    data = {split: read_split(Path(data_dir), split) for split in SPLITS}
    intents = {e.label.get("intent") for e in data["train"]}
    strangers = sorted({str(e.label.get("intent")) for e in examples} - intents)
    if strangers:
        raise ValueError(
            f"feedback labels name intents {strangers} that the data at {data_dir} does not "
            f"have ({sorted(map(str, intents))}); fix: label the feedback with this task's "
            "classes (ground truth from datasets of the same task.classes), or leave it out."
        )
    seen = {normalized(_text(e.input)) for held in data.values() for e in held}
    out: list[str | None] = []
    for example in examples:
        key = normalized(_text(example.input))
        out.append("same_text" if key in seen else None)
        seen.add(key)
    return out


def _text(path: Path) -> str:
    return Path(path).read_bytes().decode("utf-8-sig", errors="replace")
