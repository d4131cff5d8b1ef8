"""Text in, token ids out: the one featurization that training, the server and the drift
monitor share, so the served model sees a message exactly as it was trained on it.

A text becomes words and the character trigrams of each word (fastText style), digits folded
to 0 (an order number says nothing about the intent), each hashed with CRC-32 into
`1..n_buckets-1`; 0 pads to the fixed length the exported model takes. CRC-32, not Python's
`hash`: that one is salted per process.
"""

from __future__ import annotations

import codecs
import re
import zlib

import numpy as np

# The longest text a request may carry: the task is short messages, and a bound keeps one
# request from holding the model thread.
MAX_REQUEST_CHARS = 2000
_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")


class TextError(ValueError):
    """Bytes that are not a usable text: HTTP `status`, machine `code`, a message with the fix."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def charset_of(media_type: str | None) -> str:
    """The charset parameter of a Content-Type (UTF-8 when none is given)."""
    for part in (media_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def decode_text(data: bytes, charset: str = "utf-8", max_chars: int = MAX_REQUEST_CHARS) -> str:
    """Request or file bytes -> the message (a UTF-8 BOM dropped); TextError when the bytes
    are not text in `charset`, hold no words, or are longer than `max_chars`."""
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        raise TextError(
            415,
            "unsupported_charset",
            f"charset {charset!r} is not a known text encoding; fix: send UTF-8 "
            "(`Content-Type: text/plain; charset=utf-8`)",
        ) from None
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        raise TextError(
            400,
            "corrupt_text",
            f"the body is not valid {codec} text (bad byte at offset {e.start}); fix: send the "
            "message as UTF-8 text, e.g. `curl --data-binary @message.txt "
            "-H 'Content-Type: text/plain; charset=utf-8'`",
        ) from None
    if not _WORD.search(text):
        raise TextError(
            422,
            "empty_text",
            "the message holds no words (it is empty or only spaces and punctuation); fix: "
            "send the text of the message",
        )
    if len(text) > max_chars:
        raise TextError(
            413,
            "text_too_long",
            f"the message is {len(text)} characters long, over the limit of {max_chars}; "
            "fix: send one short message per request (split longer text)",
        )
    return text


def tokens(text: str) -> list[str]:
    """Words (`w:`) and the trigrams of each word with its boundaries (`c:`), in text order."""
    out: list[str] = []
    for word in _WORD.findall(_DIGIT.sub("0", text.lower())):
        out.append("w:" + word)
        padded = f"<{word}>"
        out += ["c:" + padded[i : i + 3] for i in range(len(padded) - 2)]
    return out


def featurize(text: str, n_buckets: int, max_tokens: int) -> np.ndarray:
    """int64 [max_tokens]: the hashed ids of `tokens(text)` (the first max_tokens), 0-padded."""
    ids = np.zeros(max_tokens, dtype=np.int64)
    for i, token in enumerate(tokens(text)[:max_tokens]):
        ids[i] = 1 + zlib.crc32(token.encode("utf-8")) % (n_buckets - 1)
    return ids
