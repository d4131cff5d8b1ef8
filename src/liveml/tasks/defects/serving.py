"""The defects endpoint (`/v1/defects`): photos of any size in, boxes in the photo's own pixels
out, with an optional `?min_score=`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from PIL import Image

from liveml.serving import inputs
from liveml.serving.predictors import Predictor, Prepared
from liveml.serving.runtime import Runtime


class DefectsPredictor(Predictor):
    """Photos of any size in; boxes in the photo's own pixels out."""

    parameters: ClassVar[dict[str, str]] = {
        "min_score": "drop detections scoring below this (a number in [0, 1])"
    }

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
