"""Validation of a textintent dataset: every problem names its file and says what is wrong.

Checks: the layout (manifests, listed files present, no unlisted ones), readable text (UTF-8,
with words), length (within what the endpoint takes), labels (one of task.classes), class
balance (every intent in train), label consistency (one text, one intent) and leakage (no
text in two splits). Never raises on bad data: the validate stage fails on `problems`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from liveml.data.findings import Findings

from textintent.layout import LABELS, TEXTS, manifest_path
from textintent.synth import SPLITS, normalized
from textintent.text import MAX_REQUEST_CHARS, TextError, decode_text

CHECKS = (
    "layout",
    "readable",
    "length",
    "labels",
    "class_balance",
    "label_consistency",
    "leakage",
)


def validate(classes: list[str], data_dir: Path) -> dict:
    """Check the dataset in `data_dir`; return {ok, problems, summary, checks} (JSON-ready)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data folder {data_dir} does not exist; fix: generate it (`dvc repro generate`)."
        )
    found = Findings(data_dir, CHECKS)
    texts: dict[str, list[tuple[str, str, str]]] = {}  # split -> (file, text, intent)
    for split in SPLITS:
        texts[split] = _read(data_dir, split, classes, found)
    _balance(texts["train"], classes, found)
    duplicates = _consistency(texts, found)
    problems = found.problems()
    lengths = [len(t) for rows in texts.values() for _, t, _ in rows]
    return {
        "ok": not problems,
        "problems": problems,
        "summary": {
            "splits": {
                s: dict(sorted(Counter(i for _, _, i in rows).items())) for s, rows in texts.items()
            },
            "messages": len(lengths),
            "mean_chars": round(sum(lengths) / len(lengths), 2) if lengths else None,
            "max_chars": max(lengths, default=None),
            "repeats_within_split": duplicates,
            "problems": len(problems),
        },
        "checks": found.checks(),
    }


def _read(data_dir: Path, split: str, classes: list[str], found: Findings):
    """The split's readable, labelled messages; every defect reported."""
    rel_manifest = f"{LABELS}/{split}.jsonl"
    path = manifest_path(data_dir, split)
    if not path.is_file():
        found.add("layout", rel_manifest, "missing: the split's manifest is not there")
        return []
    rows: list[tuple[str, str, str]] = []
    listed: set[str] = set()
    for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            found.add("layout", rel_manifest, f"line {n} is not JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            found.add("layout", rel_manifest, f'line {n} has no "file" string')
            continue
        rel = row["file"]
        if rel in listed:
            found.add("layout", rel, f"listed twice in {rel_manifest}")
            continue
        listed.add(rel)
        file = data_dir / rel
        if not file.is_file():
            found.add("layout", rel, f"listed in {rel_manifest} (line {n}) but missing")
            continue
        intent = row.get("intent")
        if intent not in classes:
            found.add(
                "labels", rel, f"intent {intent!r} is not one of task.classes {list(classes)}"
            )
            continue
        try:
            text = decode_text(file.read_bytes(), max_chars=MAX_REQUEST_CHARS)
        except TextError as e:
            check = "length" if e.code == "text_too_long" else "readable"
            found.add(check, rel, e.message.split("; fix:")[0])
            continue
        rows.append((rel, text, intent))
    folder = data_dir / TEXTS / split
    if folder.is_dir():
        for file in sorted(folder.glob("*.txt")):
            rel = f"{TEXTS}/{split}/{file.name}"
            if rel not in listed:
                found.add("layout", rel, f"not listed in {rel_manifest}: unlabelled")
    if not rows and not found.by_check["layout"]:
        found.add("layout", rel_manifest, "lists no messages")
    return rows


def _balance(train: list[tuple[str, str, str]], classes: list[str], found: Findings) -> None:
    counts = Counter(i for _, _, i in train)
    for intent in classes:
        if counts[intent] == 0:
            found.add(
                "class_balance",
                f"{LABELS}/train.jsonl",
                f"no training message has intent {intent!r}: the model cannot learn it",
            )


def _consistency(texts: dict[str, list[tuple[str, str, str]]], found: Findings) -> int:
    """Report one text under two intents, or in two splits; return the harmless repeats
    (same text, same intent, same split)."""
    seen: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # text -> (split, file, intent)
    for split, rows in texts.items():
        for rel, text, intent in rows:
            seen[normalized(text)].append((split, rel, intent))
    repeats = 0
    for copies in seen.values():
        first_split, first_file, first_intent = copies[0]
        for split, rel, intent in copies[1:]:
            if intent != first_intent:
                found.add(
                    "label_consistency",
                    rel,
                    f"same text as {first_file} but intent {intent!r}, not {first_intent!r}",
                )
            elif split != first_split:
                found.add(
                    "leakage",
                    rel,
                    f"same text as {first_file}: a message in {first_split} and {split} "
                    "measures memory, not skill",
                )
            else:
                repeats += 1
    return repeats
