"""Deterministic data order: per-sample seeds and an epoch-keyed sampler shared by all tasks.

A sample's augmentation and an epoch's order are pure functions of (seed, epoch, index), so a
resumed run sees exactly the batches an uninterrupted one would. Under DDP every process takes
its own share of that one order (`shard`), so Lightning need not swap in its own sampler.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed: nearby (seed, epoch, index) tuples give unrelated streams."""
    data = b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: list) -> list:
    """This process's share of `items` under DDP: every world_size-th item from its rank, the
    list first padded by wrapping around so each process gets as many (as DistributedSampler
    does: unequal counts would leave one process waiting in a collective forever)."""
    rank, world = _rank_world()
    if world == 1 or not items:
        return items
    per = -(-len(items) // world)
    padded = (items * (per * world // len(items) + 1))[: per * world]
    return padded[rank::world]


def shard_len(n: int) -> int:
    """len(shard(x)) for a list of n items, without building it."""
    return -(-n // _rank_world()[1]) if n else 0


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields `(epoch, index)` keys, shuffled by a generator seeded with (seed, epoch).

    Lightning calls `set_epoch` before every epoch (also when resuming from a checkpoint),
    so the order of epoch e is the same whether or not the run was interrupted. Under DDP each
    process yields its `shard` of that order.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter(shard([(epoch, i) for i in self.order(epoch)]))

    def __len__(self) -> int:
        return shard_len(self.size)
