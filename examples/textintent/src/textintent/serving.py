"""The endpoint `/v1/textintent`: a `text/plain` message in, its intent and the score of each
intent out. The request's text is featurized here exactly as in training (textintent.text);
the exported model only sees token ids."""

from __future__ import annotations

import numpy as np
from liveml.serving.inputs import InputError
from liveml.serving.predictors import Predictor, Prepared
from liveml.serving.runtime import Runtime

from textintent.text import TextError, charset_of, decode_text, featurize


class TextIntentPredictor(Predictor):
    """Answers {"intent", "confidence", "scores": {intent: probability}, "chars"}. Accepted
    media types (text/plain) and the capture suffix (.txt) come from the task's contract."""

    def __init__(self, runtime: Runtime, limits: dict):
        super().__init__(runtime, limits)
        config = runtime.card["lineage"]["config"]
        self.n_buckets = int(config["model"]["n_buckets"])
        # The model's input length, from its own signature: the server never guesses it.
        self.max_tokens = int(runtime.card["signature"]["inputs"][0]["shape"][-1])
        self.classes = list(runtime.card.get("classes") or config["task"]["classes"])

    def text(self, data: bytes, media_type: str | None) -> str:
        """The request's message, or InputError naming the problem and the fix."""
        try:
            return decode_text(data, charset_of(media_type))
        except TextError as e:
            raise InputError(e.status, e.code, e.message) from None

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        text = self.text(data, media_type)
        ids = featurize(text, self.n_buckets, self.max_tokens)
        return Prepared(ids, key=None, meta={"chars": len(text)})

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        probs = outputs[0][index]
        best = int(probs.argmax())
        return {
            "intent": self.classes[best],
            "confidence": round(float(probs[best]), 4),
            "scores": {c: round(float(p), 4) for c, p in zip(self.classes, probs, strict=True)},
            "chars": meta["chars"],
        }

    def warmup_input(self) -> Prepared:
        return self.decode(b"hello, where is my order?", "text/plain")
