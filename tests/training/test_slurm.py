"""A Hydra sweep on a real SLURM cluster: `python -m liveml.training -m hydra/launcher=slurm`
submits each job through submitit to a single-node cluster of Debian's slurmctld/slurmd/munged
(tests/slurmcluster.py), and every job's run record arrives in the project's run store.

Needs root and the Debian packages (`.ci/run` installs them); skipped otherwise, saying which.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from liveml.tracking.runs import RunStore

from slurmcluster import SlurmCluster, missing

pytestmark = pytest.mark.slurm

LRS = ("0.004", "0.002")


@pytest.fixture
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster (2 CPUs), torn down after the test whatever happens."""
    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=2)
    with cluster:
        yield cluster


def _submitted_jobs(sweep_dir: Path) -> list[str]:
    """The SLURM job ids of the array's tasks, from submitit's folder: `.submitit/<array>/`
    holds the batch script, `.submitit/<array>_<task>/` each task's pickles and logs."""
    return sorted(p.name for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir())


def test_a_hydra_sweep_runs_as_slurm_jobs_and_stores_every_run(
    slurm_cluster, tiny_trainable, tiny_overrides
):
    root = tiny_trainable.root
    env = {k: v for k, v in slurm_cluster.env().items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(root), WANDB_MODE="offline")
    cmd = [
        *(sys.executable, "-m", "liveml.training", "-m", "hydra/launcher=slurm"),
        *tiny_overrides,
        "trainer.max_epochs=1",
        f"model.lr={','.join(LRS)}",
        # The shipped launcher asks 2 CPUs and 8 GB per job; this node has 2 CPUs: run both
        # jobs at once, one CPU each (trainer.num_threads=1 in the tiny overrides).
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        "hydra.sweep.dir=sweeps/slurm",
    ]
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        queue = slurm_cluster.run("squeue", check=False)
        pytest.fail(f"the sweep did not finish in {e.timeout} s\n{queue}\n{slurm_cluster.logs()}")
    assert out.returncode == 0, (
        out.stdout[-3000:] + out.stderr[-5000:] + "\n" + slurm_cluster.logs()
    )

    # Both jobs ran as SLURM jobs on this cluster's node, and completed.
    jobs = _submitted_jobs(root / "sweeps/slurm")
    assert len(jobs) == 2, jobs
    for job in jobs:
        state = slurm_cluster.wait_done(job)
        show = slurm_cluster.run("scontrol", "show", "job", job)
        assert state == "COMPLETED", show
        assert f"NodeList={slurm_cluster.node}" in show and "JobName=liveml-defects" in show, show

    # Both records arrived in the project's store, as one sweep of two jobs.
    records = RunStore.for_project(tiny_trainable).list()
    assert len(records) == 2, [r["run_id"] for r in records]
    assert {r["status"] for r in records} == {"finished"}
    assert {str(r["config"]["model"]["lr"]) for r in records} == set(LRS)
    sweeps = [r["sweep"] for r in records]
    assert {s["kind"] for s in sweeps} == {"hydra"}
    assert {s["name"] for s in sweeps} == {"sweeps/slurm"}
    assert sorted(s["job"] for s in sweeps) == [0, 1]
    assert len({r["fingerprint"] for r in records}) == 2
    for job_num in (0, 1):
        assert (root / "sweeps/slurm" / str(job_num) / "model" / "weights.pt").is_file()
    # Each SLURM job's own output (submitit's log) names the run it trained: the records came
    # from those jobs, not from this process.
    trained = set()
    for job in jobs:
        log = (root / "sweeps/slurm/.submitit" / job / f"{job}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job}," in log, log[-2000:]
        trained |= {r["run_id"] for r in records if f"trained run {r['run_id']} " in log}
    assert trained == {r["run_id"] for r in records}
