"""Run store: save and look up runs; concurrent writers lose nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from liveml.tracking.runs import RunNotFoundError, RunStore

from runrecords import write_metrics_csv


def record(run_id: str, **extra) -> dict:
    return {"run_id": run_id, "fingerprint": "ab" * 32, "metrics": {"val/map": 0.5}, **extra}


def test_save_and_get_by_id_prefix_folder_and_file(tmp_path):
    store = RunStore(tmp_path / "runs")
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,epoch,train/loss\n0,0,1.5\n")
    folder = store.save(record("20261124-153012-ab12cd34"), files={"metrics.csv": csv})
    store.save(record("20261124-160000-ffff0000"))

    assert folder == tmp_path / "runs" / "20261124-153012-ab12cd34"
    assert (folder / "metrics.csv").read_text() == csv.read_text()
    assert store.get("20261124-153012-ab12cd34")["metrics"] == {"val/map": 0.5}
    assert store.get("20261124-15")["run_id"] == "20261124-153012-ab12cd34"  # unique prefix
    assert store.get(folder)["run_id"] == "20261124-153012-ab12cd34"  # a folder with run.json
    assert store.get(folder / "run.json")["run_id"] == "20261124-153012-ab12cd34"
    assert [r["run_id"] for r in store.list()] == [
        "20261124-153012-ab12cd34",
        "20261124-160000-ffff0000",
    ]


def test_model_folder_outside_the_store(tmp_path):
    model = tmp_path / "data" / "model"
    model.mkdir(parents=True)
    (model / "run.json").write_text(json.dumps(record("x1")))
    assert RunStore(tmp_path / "no-runs-yet").get(model)["run_id"] == "x1"


def test_not_found_and_ambiguous_errors_are_clear(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.save(record("20261124-153012-ab12cd34"))
    store.save(record("20261124-153013-ab12cd34"))
    with pytest.raises(RunNotFoundError) as e:
        store.get("nope")
    msg = str(e.value)
    assert "'nope'" in msg and "liveml runs" in msg and "2 runs" in msg and "path nope" in msg
    with pytest.raises(RunNotFoundError, match=r"ambiguous.*153012.*153013"):
        store.get("20261124-1530")


def test_same_id_gets_a_suffix(tmp_path):
    store = RunStore(tmp_path / "runs")
    a, b = record("r-1"), record("r-1")
    store.save(a)
    store.save(b)
    assert (a["run_id"], b["run_id"]) == ("r-1", "r-1-2")
    assert store.get("r-1-2")["run_id"] == "r-1-2"


def _save_one(args) -> str:
    root, i = args
    rec = record("20261124-153012-ab12cd34", worker=i, payload="x" * 50_000)
    RunStore(root).save(rec)
    return rec["run_id"]


def test_concurrent_saves_lose_nothing(tmp_path):
    root = tmp_path / "runs"
    # The same run id from 8 processes at once: the worst case for collisions.
    with mp.get_context("fork").Pool(8) as pool:
        ids = pool.map(_save_one, [(root, i) for i in range(8)])
    assert len(set(ids)) == 8
    store = RunStore(root)
    assert sorted(store.ids()) == sorted(ids)
    assert sorted(r["worker"] for r in store.list()) == list(range(8))
    for run_id in ids:
        rec = store.get(run_id)
        assert rec["run_id"] == run_id and len(rec["payload"]) == 50_000
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _save_with_log(args) -> str:
    root, i, log = args
    rec = record("20261124-153012-ab12cd34", worker=i, sweep={"name": "s", "job": i})
    RunStore(root).save(rec, files={"metrics.csv": log})
    return rec["run_id"]


def test_readers_never_see_a_half_written_run_while_8_jobs_save(tmp_path):
    """What `liveml compare` sees while a sweep's 8 jobs finish at once: whole runs only."""
    root = tmp_path / "runs"
    log = tmp_path / "metrics.csv"
    log.write_text("step,epoch,val/map\n" + "".join(f"{s},0,0.5\n" for s in range(20_000)))
    with mp.get_context("fork").Pool(8) as pool:
        pending = pool.map_async(_save_with_log, [(root, i, log) for i in range(8)])
        reads = 0
        while not pending.ready():
            reads += 1
            for r in RunStore(root).list():  # every listed run is whole: record and metric log
                assert r["sweep"]["name"] == "s"
                assert (root / r["run_id"] / "metrics.csv").stat().st_size == log.stat().st_size
        ids = pending.get()
    assert reads > 0  # the store was read while the writers were busy
    assert len(set(ids)) == 8 and len(RunStore(root).list()) == 8


# --- temps of killed writers --------------------------------------------------------------

KILLED_SAVE = """
import os, shutil, signal, sys
from liveml.tracking import runs
def die(*args):  # the copy of the metric log never ends: the process is killed midway
    os.kill(os.getpid(), signal.SIGKILL)
runs.shutil.copyfile = die
runs.RunStore(sys.argv[1]).save({"run_id": "20261125-000000-killed00", "fingerprint": "f"},
                                files={"metrics.csv": sys.argv[2]})
"""


def test_a_killed_save_leaves_a_temp_that_a_later_writer_removes(tmp_path):
    root = tmp_path / "runs"
    log = write_metrics_csv(tmp_path / "metrics.csv")
    child = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(root), str(log)])
    assert child.wait(timeout=60) == -9
    (left,) = [p for p in root.iterdir() if p.name.startswith(".")]
    # Named like liveml.core.atomic's temps: the run id, the writer's pid, random, .tmp
    assert left.name.startswith(f".20261125-000000-killed00.{child.pid}-")
    assert left.name.endswith(".tmp")
    store = RunStore(root)
    assert store.ids() == [] and store.list() == []  # never seen as a run
    assert store.clean_temps() == []  # too young: its writer might still be busy elsewhere
    old = time.time() - 120
    os.utime(left, (old, old))
    live = root / f".20261125-000000-alive000.{os.getpid()}-abcdefgh.tmp"
    live.mkdir()
    os.utime(live, (old, old))
    store.save(record("20261125-010000-next0000"))  # the first write cleans
    assert not left.exists()
    assert live.exists()  # its process still runs
    assert store.ids() == ["20261125-010000-next0000"]
