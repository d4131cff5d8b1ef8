"""The endpoint logic around a model, common to every task: the `Predictor` base that a task's
`predictor` subclasses (decode and prepare an input, run a batch, turn the outputs into a JSON
answer), and `build_predictor`, which asks the served model's task for its predictor. The
model's own signature (from its card) drives the preparation, so the server never guesses an
input size or a sample rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from liveml.serving.runtime import Runtime


@dataclass
class Prepared:
    """One decoded input: `tensor` goes to the model; `key` says which inputs can share a
    batch (equal keys stack); `meta` is what the answer needs about the original."""

    tensor: np.ndarray
    key: Any
    meta: dict


class Predictor:
    """Base: a task's endpoint logic over a loaded `Runtime`. `task` is the runtime's task;
    `media_types` and the capture suffix come from the task's contract unless a subclass sets
    them. `parameters` (query parameter -> meaning) is what `options` accepts: the server lists
    it with the model, so clients (and the web page) can offer it."""

    parameters: ClassVar[dict[str, str]] = {}

    def __init__(self, runtime: Runtime, limits: dict):
        from liveml.tasks import get_task

        self.runtime = runtime
        self.limits = limits
        self.task: str = runtime.task
        contract = get_task(runtime.task)
        if not hasattr(self, "media_types"):
            self.media_types = frozenset(contract.media_types)
        self.suffixes = tuple(s.lower().lstrip(".") for s in contract.suffixes)

    def decode(self, data: bytes, media_type: str | None) -> Prepared:
        raise NotImplementedError

    def postprocess(self, outputs: tuple[np.ndarray, ...], index: int, meta: dict) -> dict:
        """The answer for row `index` of a batch's outputs."""
        raise NotImplementedError

    def suffix_of(self, data: bytes) -> str:
        """File suffix for a captured input (default: the task's first suffix)."""
        return self.suffixes[0] if self.suffixes else "bin"

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


def build_predictor(runtime: Runtime, limits: dict) -> Predictor:
    """The runtime's task's predictor (`Task.predictor`); ValueError naming the fix when no
    installed task has that name."""
    from liveml.core.errors import ConfigError
    from liveml.tasks import get_task, task_names

    try:
        task = get_task(runtime.task)
    except ConfigError:
        raise ValueError(
            f"no endpoint for task {runtime.task!r} (model card {runtime.file.parent}): no "
            f"installed package registers it; installed tasks: {', '.join(task_names())}. "
            "Fix: install the package of that task, or serve another model."
        ) from None
    predictor = task.predictor(runtime, limits)
    if not isinstance(predictor, Predictor):
        raise ValueError(
            f"task {runtime.task!r}: predictor() gave {type(predictor).__name__}, not a "
            "liveml.serving.predictors.Predictor; fix: return an instance of a subclass."
        )
    return predictor
