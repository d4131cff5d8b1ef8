"""What each task's endpoint does around the model: decode and prepare an input, run a batch,
turn the outputs into a JSON answer. The model's own signature (from its card) drives the
preparation, so the server never guesses an input size or a sample rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from liveml.serving import inputs
from liveml.serving.runtime import Runtime
from liveml.tasks.speech.text import greedy_decode


@dataclass
class Prepared:
    """One decoded input: `tensor` goes to the model; `key` says which inputs can share a
    batch (equal keys stack); `meta` is what the answer needs about the original."""

    tensor: np.ndarray
    key: Any
    meta: dict


class Predictor:
    """Base: a task's endpoint logic over a loaded `Runtime`."""

    task: ClassVar[str]
    media_types: ClassVar[frozenset[str]]

    def __init__(self, runtime: Runtime, limits: dict):
        self.runtime = runtime
        self.limits = limits

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        raise NotImplementedError

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        """The answer for row `index` of a batch's outputs."""
        raise NotImplementedError

    def suffix_of(self, data: bytes) -> str:
        """File suffix for a captured input."""
        raise NotImplementedError

    def options(self, query: Mapping[str, str]) -> dict:
        """The request's query parameters this endpoint takes, checked (InputError if bad)."""
        return {}

    def select(self, answer: dict, options: dict) -> dict:
        """The answer as the request's options shape it."""
        return answer

    def warmup_input(self) -> Prepared:
        raise NotImplementedError

    def run(self, batch: list[Prepared]) -> list[dict]:
        """Answers for inputs of one key, in order; a fixed-batch graph runs them in slices."""
        x = np.stack([p.tensor for p in batch])
        step = self.runtime.fixed_batch or len(batch)
        answers = []
        for start in range(0, len(batch), step):
            outputs = self.runtime.run(x[start : start + step])
            for i, p in enumerate(batch[start : start + step]):
                answers.append(self.postprocess(outputs, i, p.meta))
        return answers


class DefectsPredictor(Predictor):
    """Photos of any size in; boxes in the photo's own pixels out."""

    task = "defects"
    media_types = frozenset(inputs.IMAGE_TYPES)

    def __init__(self, runtime: Runtime, limits: dict):
        super().__init__(runtime, limits)
        shape = runtime.card["signature"]["inputs"][0]["shape"]
        self.height, self.width = int(shape[-2]), int(shape[-1])
        self.classes = list(runtime.card["classes"])

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        rgb = inputs.decode_image(data, max_pixels=self.limits["max_pixels"])
        h, w = rgb.shape[:2]
        if (h, w) != (self.height, self.width):
            # The model was trained at one size; boxes are scaled back in postprocess.
            rgb = np.asarray(Image.fromarray(rgb).resize((self.width, self.height), Image.BILINEAR))
        tensor = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0
        return Prepared(tensor, key=None, meta={"width": w, "height": h})

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        boxes, scores, labels, image_index = outputs
        mine = image_index == index
        scale = np.array(
            [meta["width"] / self.width, meta["height"] / self.height] * 2, dtype=np.float32
        )
        detections = [
            {
                "box": [round(float(v), 2) for v in box * scale],
                "label": self.classes[int(label) - 1],
                "score": round(float(score), 4),
            }
            for box, score, label in zip(boxes[mine], scores[mine], labels[mine], strict=True)
        ]
        detections.sort(key=lambda d: -d["score"])
        return {"width": meta["width"], "height": meta["height"], "detections": detections}

    def suffix_of(self, data: bytes) -> str:
        return "png" if data.startswith(b"\x89PNG") else "jpg"

    def options(self, query: Mapping[str, str]) -> dict:
        raw = query.get("min_score")
        if raw is None:
            return {}
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise inputs.InputError(
                400,
                "bad_parameter",
                f"min_score={raw!r} is not a number in [0, 1]; fix: ?min_score=0.5",
            )
        return {"min_score": value}

    def select(self, answer: dict, options: dict) -> dict:
        min_score = options.get("min_score", 0.0)
        if not min_score:
            return answer
        kept = [d for d in answer["detections"] if d["score"] >= min_score]
        return {**answer, "detections": kept}

    def warmup_input(self) -> Prepared:
        blank = np.zeros((3, self.height, self.width), np.float32)
        return Prepared(blank, None, {"width": self.width, "height": self.height})


class SpeechPredictor(Predictor):
    """WAV recordings in (resampled to the model's rate); greedy CTC transcripts out.

    The exported recognizer counts every row of a batch as S samples long, so only clips of
    equal length share a batch: zero-padding would change a clip's feature normalization.
    """

    task = "speech"
    media_types = inputs.AUDIO_TYPES

    def __init__(self, runtime: Runtime, limits: dict):
        super().__init__(runtime, limits)
        config = runtime.card["lineage"]["config"]
        self.sample_rate = int(config["data"]["sample_rate"])
        # The model needs one analysis window; shorter clips are padded with silence.
        self.min_samples = round(self.sample_rate * float(config["model"]["win_ms"]) / 1000)

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        wave = inputs.decode_wav(
            data, sample_rate=self.sample_rate, max_seconds=self.limits["max_audio_s"]
        )
        duration = len(wave) / self.sample_rate
        if len(wave) < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - len(wave)))
        return Prepared(wave.astype(np.float32), key=len(wave), meta={"duration_s": duration})

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        log_probs, lengths = outputs
        best = log_probs[index, : int(lengths[index])].argmax(-1)
        return {
            "transcript": greedy_decode(best.tolist()),
            "duration_s": round(meta["duration_s"], 4),
        }

    def suffix_of(self, data: bytes) -> str:
        return "wav"

    def warmup_input(self) -> Prepared:
        silence = np.zeros(self.sample_rate, np.float32)
        return Prepared(silence, len(silence), {"duration_s": 1.0})


PREDICTORS: dict[str, type[Predictor]] = {p.task: p for p in (DefectsPredictor, SpeechPredictor)}


def build_predictor(runtime: Runtime, limits: dict) -> Predictor:
    """The predictor for the runtime's task (ModelLoadError-style message when unknown)."""
    try:
        cls = PREDICTORS[runtime.task]
    except KeyError:
        raise ValueError(
            f"no endpoint for task {runtime.task!r} (model card {runtime.file.parent}); "
            f"served tasks: {', '.join(PREDICTORS)}"
        ) from None
    return cls(runtime, limits)
