"""Transcripts, normalized one way: lower-case words, digits spelled out, single spaces.

The same rule writes the labels (synth), checks them (validate) and scores the model (CER/WER),
so "3", "Three" and "three" can never be three different labels.
"""

from __future__ import annotations

import re

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The CTC output alphabet; index 0 is the CTC blank.
BLANK = "_"
ALPHABET = BLANK + " '" + "abcdefghijklmnopqrstuvwxyz"

_NOT_KEPT = re.compile(r"[^a-z' ]+")


def normalize(text: str) -> str:
    """The one spelling of a transcript: 'Turn LEFT, 3!' -> 'turn left three'."""
    text = text.lower()
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text)
    text = _NOT_KEPT.sub(" ", text)
    return " ".join(text.split())


def encode(text: str) -> list[int]:
    """Character ids of a normalized transcript (ValueError names a character outside it)."""
    bad = sorted({c for c in text if c not in ALPHABET or c == BLANK})
    if bad:
        raise ValueError(
            f"transcript {text!r} has characters outside the alphabet: {bad}; "
            "fix: pass it through `normalize` first."
        )
    return [ALPHABET.index(c) for c in text]


def greedy_decode(ids: list[int]) -> str:
    """CTC best path: merge repeats, drop blanks, tidy spaces."""
    out, prev = [], -1
    for i in ids:
        if i != prev and i != 0:
            out.append(ALPHABET[i])
        prev = i
    return " ".join("".join(out).split())
