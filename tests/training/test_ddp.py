"""DDP on the CPU: 2 gloo processes through `trainer=ddp_cpu`, each on its shard of the data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from liveml.data.sampling import EpochSampler, shard
from liveml.tracking.runs import RunStore


def _shards(rank: int, world: int, init: str, out) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        sampler = EpochSampler(11, seed=3)
        sampler.set_epoch(2)
        out[rank] = (list(sampler), len(sampler), shard(list(range(5))))
    finally:
        dist.destroy_process_group()


def test_each_process_gets_an_equal_share_of_one_epoch_order(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()
        init = f"file://{tmp_path / 'rendezvous'}"
        mp.start_processes(_shards, args=(2, init, out), nprocs=2, start_method="fork")
        (keys0, n0, five0), (keys1, n1, five1) = out[0], out[1]
    single = EpochSampler(11, seed=3)
    single.set_epoch(2)
    order = list(single)
    assert n0 == n1 == len(keys0) == len(keys1) == 6  # 11 padded to 12, 6 each
    assert keys0 == order[0::2] and keys1 == (order + order[:1])[1::2]
    assert set(keys0) | set(keys1) == set(order)
    assert (five0, five1) == ([0, 2, 4], [1, 3, 0])


@pytest.mark.slow  # 20 s; shard unit tests stay in the default suite
def test_ddp_cpu_trains_with_two_processes(tiny_trainable, tiny_overrides):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(tiny_trainable.root), WANDB_MODE="offline")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "liveml.training",
            "trainer=ddp_cpu",
            *tiny_overrides,
            "trainer.max_epochs=2",
            "trainer.num_threads=1",
        ],
        cwd=tiny_trainable.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "distributed_backend=gloo" in out.stdout + out.stderr
    # Only rank 0 records and saves: one run, one model folder.
    (record,) = RunStore.for_project(tiny_trainable).list()
    assert record["world_size"] == 2 and record["status"] == "finished"
    assert record["config"]["trainer"]["strategy"] == "ddp"
    # 16 training images, batch 8: 2 steps per epoch alone, 1 per process with 2 processes.
    assert record["global_step"] == 2 and record["epochs"] == 2
    assert record["metrics"]["val/map_50"] >= 0
    (model,) = tiny_trainable.root.glob("outputs/*/*/model")
    assert (model / "weights.pt").is_file()
