"""DDP across nodes: two `torchrun --nnodes 2 --nproc-per-node 1` agents on this machine (one per
"node", meeting through a c10d rendezvous on 127.0.0.1, gloo) train the tiny config to the same
weights and metrics as one `torchrun --nnodes 1 --nproc-per-node 2` agent.

Both topologies have world size 2 and shard the data by global rank, so the arithmetic is the same;
only `trainer.devices`/`trainer.num_nodes` (what Lightning checks against torchrun's world) differ.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from liveml.tracking.runs import RunStore

TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(root: Path, nnodes: int, nproc: int, port: int, run_id: str, overrides: list[str]):
    """One torchrun agent (one "node") running `python -m liveml.training` in the project."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(root), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run"),
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={run_id}",
        "--max-restarts=0",
        *("-m", "liveml.training"),
        "trainer=ddp_cpu",
        *overrides,
    ]
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_all(procs: list[subprocess.Popen]) -> list[str]:
    """Every agent's output once all exit 0; on a failure or timeout, the others are stopped."""
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outs.append(out)
            assert p.returncode == 0, "\n".join(o[-4000:] for o in outs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outs


def _config_diff(a, b, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (a's value, b's value)} for every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = {}
        for k in sorted(set(a) | set(b)):
            out |= _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return {} if a == b else {prefix.rstrip("."): (a, b)}


@pytest.mark.slow  # two DDP trainings of 2 processes each: about 60 s on 2 busy cores
def test_two_nodes_of_one_process_train_like_one_node_of_two(tiny_trainable, tiny_overrides):
    root = tiny_trainable.root
    common = [*tiny_overrides, "trainer.max_epochs=2", "trainer.num_threads=1"]

    # One node, two processes (the reference).
    single = [*common, "hydra.run.dir=outputs/1x2"]
    _wait_all([_torchrun(root, 1, 2, _free_port(), "one-node", single)])
    (ref,) = RunStore.for_project(tiny_trainable).list()

    # Two nodes, one process each: the same command on both, as on a cluster.
    multi = [*common, "trainer.devices=1", "trainer.num_nodes=2", "hydra.run.dir=outputs/2x1"]
    port = _free_port()
    outs = _wait_all([_torchrun(root, 2, 1, port, "two-nodes", multi) for _ in range(2)])
    assert any("distributed_backend=gloo" in o for o in outs), outs[0][-3000:]
    runs = RunStore.for_project(tiny_trainable).list()
    (two,) = [r for r in runs if r["run_id"] != ref["run_id"]]

    for r in (ref, two):
        assert r["status"] == "finished" and r["world_size"] == 2
    assert (two["config"]["trainer"]["num_nodes"], two["config"]["trainer"]["devices"]) == (2, 1)
    # The same training: bit-identical weights, the same metrics, steps and epochs.
    assert two["weights_sha256"] == ref["weights_sha256"]
    assert two["metrics"] == ref["metrics"]
    assert (two["global_step"], two["epochs"]) == (ref["global_step"], ref["epochs"]) == (2, 2)
    # What legitimately differs: the topology keys of the config, hence the fingerprint's
    # config part (and the fingerprint, run id, times); code and data are the same.
    assert _config_diff(ref["config"], two["config"]) == {
        "trainer.devices": (2, 1),
        "trainer.num_nodes": (1, 2),
    }
    assert two["fingerprint"] != ref["fingerprint"]
    parts_ref, parts_two = ref["fingerprint_parts"], two["fingerprint_parts"]
    assert {k for k in parts_ref if parts_ref[k] != parts_two[k]} == {"config"}
    assert two["data"] == ref["data"] and two["code"] == ref["code"]
    assert two["environment"] == ref["environment"]
    # Only global rank 0 (on the first node) saved a model.
    assert (root / "outputs/2x1/model/weights.pt").is_file()
