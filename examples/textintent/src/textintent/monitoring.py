"""What the drift monitor watches: features of a message as sent (length, digits, capitals,
words the generator's vocabulary does not know, i.e. typos), and the model's own view of a
batch of messages (confidence, predicted intent, the averaged token vector)."""

from __future__ import annotations

import re
import string
from functools import cache
from typing import Any

import numpy as np

from textintent.text import TextError, decode_text, featurize

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters
_PUNCT = frozenset(string.punctuation)


def decode(data: bytes) -> str:
    """The message of captured bytes, decoded as the server does; ValueError if it would not."""
    try:
        return decode_text(data)
    except TextError as e:
        raise ValueError(f"cannot read the message: {e.message}") from e


@cache
def vocabulary() -> frozenset[str]:
    """Every word the generator writes: a word outside it is a typo or a new topic."""
    from textintent import synth

    texts = [t for ts in synth.TEMPLATES.values() for t in ts]
    texts += [s for ss in synth.SLOTS.values() for s in ss]
    texts += [*synth.GREETINGS, *synth.REFERENCES, *synth.FILLERS, *synth.SIGN_OFFS]
    return frozenset(w.lower() for t in texts for w in _WORD.findall(t))


def input_features(data: bytes) -> dict[str, float]:
    """Numbers about one message: chars, words, mean word length, and the shares of digits,
    capitals (of letters), punctuation (of chars) and unknown words (of words)."""
    text = decode(data)
    n = max(len(text), 1)
    words = _WORD.findall(text)
    letters = sum(c.isalpha() for c in text)
    known = vocabulary()
    return {
        "chars": float(len(text)),
        "words": float(len(words)),
        "mean_word_chars": float(np.mean([len(w) for w in words])) if words else 0.0,
        "digit_share": sum(c.isdigit() for c in text) / n,
        "upper_share": sum(c.isupper() for c in text) / max(letters, 1),
        "punct_share": sum(c in _PUNCT for c in text) / n,
        "unknown_word_share": (
            sum(w.lower() not in known for w in words) / len(words) if words else 0.0
        ),
    }


def model_view(module: Any, inputs: list[bytes], batch_size: int = 256) -> dict:
    """{"confidence": float64 [n] top probability, "predicted_class": the intents [n],
    "embedding": float32 [n, D] the averaged token vectors} of an eval-mode module."""
    import torch

    cfg = module.cfg
    classes = list(cfg.task.classes)
    n_buckets, max_tokens = int(cfg.model.n_buckets), int(cfg.model.max_tokens)
    net = module.model.eval()
    device = next(net.parameters()).device
    embeddings, probs = [], []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = [
                featurize(decode(d), n_buckets, max_tokens)
                for d in inputs[start : start + batch_size]
            ]
            ids = torch.from_numpy(np.stack(batch)).to(device)
            vectors = net.embed(ids)
            embeddings.append(vectors.float().cpu().numpy())
            probs.append(torch.softmax(net.classifier(vectors), dim=-1).cpu().numpy())
    width = int(net.embedding.embedding_dim)
    p = np.concatenate(probs) if probs else np.zeros((0, len(classes)), np.float32)
    return {
        "confidence": p.max(axis=1).astype(np.float64),
        "predicted_class": np.array([classes[i] for i in p.argmax(axis=1)], dtype=str),
        "embedding": (
            np.concatenate(embeddings).astype(np.float32)
            if embeddings
            else np.zeros((0, width), np.float32)
        ),
    }
