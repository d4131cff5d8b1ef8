"""A dataset split as a torch Dataset, over any task's on-disk layout (`Task.read_split`).

Items are (input path, label record) in the split's stored order; a task's datamodule adds its
own decoding, augmentation and collation (`transform`, `collate`), so a new task gets a loader
without knowing how the framework stores feedback or merges it into the data.

    ds = LayoutDataset(get_task(cfg.task.name), data_dir, "train", transform=decode)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

if TYPE_CHECKING:
    from liveml.tasks.base import Example, Task


class LayoutDataset(Dataset):
    """One split of a dataset folder: item i is `transform(path, label)` of the split's i-th
    example (default: the pair itself). Indexable by an `(epoch, index)` key as well, as
    `liveml.data.sampling.EpochSampler` yields: `transform` then also gets keywords `epoch`
    and `index`, to seed augmentation by (seed, epoch, index)."""

    def __init__(
        self,
        task: Task,
        data_dir: Path | str,
        split: str,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.examples: list[Example] = task.read_split(self.data_dir, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        example = self.examples[index]
        if self.transform is None:
            return example.input, example.label
        if epoch is None:
            return self.transform(example.input, example.label)
        return self.transform(example.input, example.label, epoch=epoch, index=index)

    def labels(self) -> list[dict]:
        """Every label record, in order (e.g. to build class weights or length buckets)."""
        return [e.label for e in self.examples]
