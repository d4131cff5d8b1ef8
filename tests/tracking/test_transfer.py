"""Stores that travel: runs exported from one project (a cluster's) and imported into another
come whole (record, metric log, W&B folder), without the first machine's paths, once; a
different run under the same id is refused; the index shows imported runs at once."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from liveml.tracking.compare import IndexedRuns, build_table, format_table, load_runs, select
from liveml.tracking.runs import RunNotFoundError, RunStore
from liveml.tracking.transfer import (
    MANIFEST,
    ImportConflictError,
    TransferError,
    export_store,
    import_store,
    portable_record,
    wandb_folder,
)

from runrecords import make_record, save_runs, write_metrics_csv

DVC_SWEEP = {
    "name": "dvc:1a2b3c4",
    "kind": "dvc",
    "job": None,
    "overrides": {},
    "experiment": "lumpy-oak",
}
HYDRA_SWEEP = {
    "name": "multirun/2026-11-25_10-00-00",
    "kind": "hydra",
    "job": 1,
    "overrides": {"model.lr": "0.01"},
    "experiment": None,
}
RUN_IDS = ["20261125-010000-0000dvc1", "20261125-020000-00hydra1", "20261125-030000-resumed1"]


def cluster_run(project: Path, run_id: str, **kw) -> dict:
    """A run as training on `project` leaves it: record with absolute W&B and checkpoint
    paths, metrics.csv in the store, the W&B offline folder under the project's wandb dir."""
    record = make_record(run_id, **kw)
    record["config"]["paths"]["checkpoints"] = "checkpoints/defects"
    wandb_id = run_id[-8:]
    logger_dir = record["config"]["logger"]["dir"]
    sync = project / logger_dir / "wandb" / f"offline-run-20261125_010000-{wandb_id}"
    (sync / "files").mkdir(parents=True)
    (sync / "logs").mkdir()
    (sync / f"run-{wandb_id}.wandb").write_bytes(b":W&B\x00\x01\x00" + os.urandom(300))
    (sync / "files" / "output.log").write_text(f"training {run_id}\n")
    # W&B links its core log to a file of the host: never copied.
    (sync / "logs" / "debug-core.log").symlink_to("/root/.cache/wandb/logs/core-debug.log")
    record["wandb"] = {"id": wandb_id, "mode": "offline", "dir": str(sync)}
    return record


def make_cluster(root: Path) -> tuple[RunStore, list[dict]]:
    """A project at `root` with three runs: a DVC experiment, a Hydra sweep job, a resumed run."""
    store = RunStore(root / "runs")
    records = [
        cluster_run(root, RUN_IDS[0], sweep=DVC_SWEEP, lr=0.002),
        cluster_run(root, RUN_IDS[1], sweep=HYDRA_SWEEP, lr=0.01),
        cluster_run(root, RUN_IDS[2], lr=0.004),
    ]
    ckpt = root / "checkpoints" / "defects" / RUN_IDS[2][-16:] / "last.ckpt"
    records[2]["resumed_from"] = {"path": str(ckpt), "epochs_done": 1, "global_step": 10}
    save_runs(store, records, root)
    return store, records


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def assert_imported(store: RunStore, cluster: Path, records: list[dict]) -> None:
    """Each run arrived whole: record (portable, lineage verbatim), metric log, W&B folder."""
    for original in records:
        folder = store.path / original["run_id"]
        raw = (folder / "run.json").read_text()
        assert str(cluster) not in raw  # no path of the first machine
        record = json.loads(raw)
        for key in ("config", "data", "code", "sweep", "fingerprint", "metrics"):
            assert record[key] == original[key], key
        assert record["wandb"] == {
            **original["wandb"],
            "dir": f"wandb/{Path(original['wandb']['dir']).name}",
        }
        assert (folder / "metrics.csv").read_bytes() == (
            cluster / f"{original['run_id']}.csv"
        ).read_bytes()
        wandb = wandb_folder(folder, record)
        assert wandb.parent == folder / "wandb"
        copied = files_under(wandb)
        assert set(copied) == {
            f"run-{original['wandb']['id']}.wandb",
            "files/output.log",
        }  # the link to a host file stayed behind
        assert copied["files/output.log"] == f"training {original['run_id']}\n".encode()
        if original.get("resumed_from"):  # inside the project: relative to it
            assert record["resumed_from"] == {
                **original["resumed_from"],
                "path": f"checkpoints/defects/{RUN_IDS[2][-16:]}/last.ckpt",
            }


def snapshot(store: RunStore) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(store.path).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(store.path.rglob("*"))
        if p.is_file() and ".index" not in p.parts
    }


def test_export_import_round_trip_is_whole_portable_and_idempotent(tmp_path):
    cluster = tmp_path / "cluster"
    source, records = make_cluster(cluster)
    bundle = tmp_path / "bundle"
    exported = export_store(source, bundle)
    assert exported.added == RUN_IDS and not exported.warnings
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["version"] == 1 and manifest["runs"] == RUN_IDS
    assert not [p for p in bundle.rglob("*") if p.is_symlink()]
    assert all(str(cluster) not in p.read_text() for p in bundle.glob("*/run.json"))

    laptop = RunStore(tmp_path / "laptop" / "runs")
    mine = save_runs(laptop, [make_record("20261124-000000-laptop01")], tmp_path)
    result = import_store(laptop, bundle)
    assert result.added == RUN_IDS and not result.conflicts and not result.skipped
    assert laptop.ids() == sorted([*mine, *RUN_IDS])
    assert_imported(laptop, cluster, records)

    before = snapshot(laptop)
    again = import_store(laptop, bundle)
    assert again.added == [] and again.present == RUN_IDS and again.completed == []
    assert snapshot(laptop) == before  # nothing rewritten, nothing duplicated
    assert not [p for p in laptop.path.iterdir() if p.name.startswith(".") and p.name != ".index"]

    # Exporting again into the same bundle adds nothing either; nor does importing the bundle
    # back where it came from (its W&B folders stay where training wrote them).
    assert export_store(source, bundle).present == RUN_IDS
    back = import_store(source, bundle)
    assert back.present == RUN_IDS and back.added == back.completed == []
    assert not (source.path / RUN_IDS[0] / "wandb").exists()


def test_a_tar_gz_bundle_carries_the_same_runs(tmp_path):
    cluster = tmp_path / "cluster"
    source, records = make_cluster(cluster)
    archive = tmp_path / "out" / "runs.tar.gz"
    export_store(source, archive, runs=[RUN_IDS[0], RUN_IDS[2][:17]])
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert {m.name.split("/")[0] for m in members} == {MANIFEST, RUN_IDS[0], RUN_IDS[2]}
    assert all(m.uname == "" and m.uid == 0 for m in members)  # no user of this host
    assert [p.name for p in archive.parent.iterdir()] == ["runs.tar.gz"]  # no temp left

    laptop = RunStore(tmp_path / "laptop" / "runs")
    result = import_store(laptop, archive)
    assert result.added == [RUN_IDS[0], RUN_IDS[2]]
    assert_imported(laptop, cluster, [records[0], records[2]])
    assert not [p for p in laptop.path.iterdir() if p.name.startswith(".")]  # unpacked, removed
    # The same runs from the folder form of a bundle: already there.
    export_store(source, tmp_path / "bundle")
    again = import_store(laptop, tmp_path / "bundle")
    assert again.present == [RUN_IDS[0], RUN_IDS[2]] and again.added == [RUN_IDS[1]]

    with pytest.raises(RunNotFoundError, match="nope"):
        export_store(source, tmp_path / "other.tar.gz", runs=["nope"])


def test_a_raw_rsynced_store_from_a_gone_machine(tmp_path):
    """`rsync -a cluster:proj/{runs,wandb} .`: the records name paths of the cluster that do
    not exist here; the W&B folders are found next to the store, the paths made relative."""
    cluster = tmp_path / "cluster"
    _, records = make_cluster(cluster)
    bundle_store = RunStore(tmp_path / "bundle")
    export_store(RunStore(cluster / "runs"), bundle_store.path)
    copy = tmp_path / "from-cluster"
    shutil.copytree(cluster, copy, symlinks=True)
    shutil.rmtree(cluster / "runs")  # the cluster's paths in the records lead nowhere now
    shutil.rmtree(cluster / "wandb")

    laptop = RunStore(tmp_path / "laptop" / "runs")
    result = import_store(laptop, copy / "runs")
    assert result.added == RUN_IDS and not result.warnings
    assert_imported(laptop, tmp_path / "cluster", records)
    # The whole project folder works too, and so does the bundle: all already there.
    assert import_store(laptop, copy).present == RUN_IDS
    assert import_store(laptop, bundle_store.path).present == RUN_IDS
    # One run folder on its own.
    assert import_store(laptop, copy / "runs" / RUN_IDS[1]).present == [RUN_IDS[1]]


def test_a_different_run_under_the_same_id_is_refused_before_anything_is_written(tmp_path):
    cluster = tmp_path / "cluster"
    source, _ = make_cluster(cluster)
    laptop = RunStore(tmp_path / "laptop" / "runs")
    taken = make_record(RUN_IDS[1], lr=0.5, metrics={"val/map": 0.1})
    save_runs(laptop, [taken], tmp_path)
    before = snapshot(laptop)

    with pytest.raises(ImportConflictError) as e:
        import_store(laptop, source.path)
    msg = str(e.value)
    assert str(source.path / RUN_IDS[1] / "run.json") in msg  # both files named
    assert str(laptop.path / RUN_IDS[1] / "run.json") in msg
    assert "config" in msg and "metrics" in msg and "--skip-conflicts" in msg
    assert "nothing was imported" in msg and "fix:" in msg
    assert [c.run_id for c in e.value.conflicts] == [RUN_IDS[1]]
    assert snapshot(laptop) == before and laptop.ids() == [RUN_IDS[1]]  # all or nothing

    result = import_store(laptop, source.path, skip_conflicts=True)
    assert result.added == [RUN_IDS[0], RUN_IDS[2]]
    assert [c.run_id for c in result.conflicts] == [RUN_IDS[1]]
    assert laptop.get(RUN_IDS[1])["metrics"] == {"val/map": 0.1}  # the store's own run kept

    # The same record with another metric log is a conflict too.
    other = RunStore(tmp_path / "other")
    export_store(source, other.path, runs=[RUN_IDS[0]])
    write_metrics_csv(other.path / RUN_IDS[0] / "metrics.csv", steps=5)
    with pytest.raises(ImportConflictError, match=r"file metrics\.csv"):
        import_store(laptop, other.path)


def test_bad_source_records_are_skipped_and_named(tmp_path, capsys):
    cluster = tmp_path / "cluster"
    source, _ = make_cluster(cluster)
    broken = source.path / "20261125-040000-truncate"
    broken.mkdir()
    (broken / "run.json").write_text('{"run_id": "20261125-04')
    evil = source.path / "20261125-050000-evil0000"
    evil.mkdir()
    (evil / "run.json").write_text(json.dumps(make_record("../../escaped")))
    (source.path / "20261125-060000-pending0").mkdir()  # no run.json (yet)

    laptop = RunStore(tmp_path / "laptop" / "runs")
    result = import_store(laptop, source.path)
    assert result.added == RUN_IDS
    skipped = dict(result.skipped)
    assert "not valid JSON" in skipped[str(broken / "run.json")]
    assert "cannot name a run folder" in skipped[str(evil / "run.json")]
    assert "no run.json" in skipped[str(source.path / "20261125-060000-pending0")]
    err = capsys.readouterr().err
    assert "truncate/run.json: not valid JSON" in err and "evil0000/run.json" in err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "laptop" / "escaped").exists()


def test_a_wandb_folder_that_arrives_later_completes_the_run(tmp_path):
    cluster = tmp_path / "cluster"
    source, records = make_cluster(cluster)
    elsewhere = tmp_path / "wandb-copy"
    shutil.move(cluster / "wandb", elsewhere)  # the store came without the W&B folders

    laptop = RunStore(tmp_path / "laptop" / "runs")
    first = import_store(laptop, source.path, runs=[RUN_IDS[0]])
    assert first.added == [RUN_IDS[0]]
    assert "W&B folder offline-run-" in first.warnings[0] and "--wandb DIR" in first.warnings[0]
    assert not (laptop.path / RUN_IDS[0] / "wandb").exists()

    # `--wandb DIR`: W&B's own folder (the one holding offline-run-*), or a project's.
    found_in = [elsewhere / RUN_IDS[0] / "wandb"]
    second = import_store(laptop, source.path, runs=[RUN_IDS[0]], wandb_dirs=found_in)
    assert second.present == second.completed == [RUN_IDS[0]] and not second.warnings
    assert_imported(laptop, cluster, records[:1])
    assert import_store(laptop, source.path, runs=[RUN_IDS[0]]).completed == []


def test_the_index_shows_imported_runs_at_once(tmp_path):
    cluster = tmp_path / "cluster"
    source, _ = make_cluster(cluster)
    laptop = RunStore(tmp_path / "laptop" / "runs")
    save_runs(laptop, [make_record("20261124-000000-laptop01", lr=0.1)], tmp_path)
    runs = load_runs(laptop)  # builds the index
    assert isinstance(runs, IndexedRuns) and len(runs) == 1
    runs.index.close()

    import_store(laptop, source.path)
    runs = load_runs(laptop)
    assert isinstance(runs, IndexedRuns)
    assert [r.id for r in runs] == ["20261124-000000-laptop01", *RUN_IDS]
    table = format_table(build_table(runs))
    assert all(i in table for i in RUN_IDS) and "lumpy-oak" in table
    dvc = select(runs, sweep="dvc:1a2b3c4")
    assert [r.id for r in dvc] == [RUN_IDS[0]]  # the DVC experiment keeps its sweep
    assert dvc[0].sweep["experiment"] == "lumpy-oak"
    assert [r.id for r in select(runs, sweep="multirun/")] == [RUN_IDS[1]]


def test_portable_record_keeps_the_lineage_and_paths_outside_the_project(tmp_path):
    record = cluster_run(tmp_path / "p", "20261125-010000-abcdef12")
    record["resumed_from"] = {"path": "/elsewhere/last.ckpt"}
    record["config"]["paths"]["data"] = str(tmp_path / "p" / "data")  # lineage: kept as is
    out = portable_record(record)
    assert out["wandb"]["dir"] == "wandb/offline-run-20261125_010000-abcdef12"
    assert out["resumed_from"]["path"] == "/elsewhere/last.ckpt"  # not inside the project
    assert out["config"] == record["config"] and out["sweep"] == record["sweep"]


def test_sources_that_are_not_stores_are_refused_clearly(tmp_path):
    laptop = RunStore(tmp_path / "laptop")
    with pytest.raises(TransferError, match="does not exist"):
        import_store(laptop, tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TransferError, match=r"neither a folder nor a \.tar\.gz"):
        import_store(laptop, tmp_path / "notes.txt")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        tar.addfile(info)
    with pytest.raises(TransferError, match="cannot unpack"):
        import_store(laptop, evil)
    assert not (tmp_path / "outside.txt").exists()
    assert not [p for p in laptop.path.iterdir() if p.name.startswith(".")]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "a.txt").write_text("x")
    (tmp_path / "proj" / "b").mkdir()
    with pytest.raises(TransferError, match="no runs found"):
        import_store(laptop, tmp_path / "proj")
    with pytest.raises(TransferError, match="not a bundle"):
        export_store(laptop, tmp_path / "proj")


def test_an_mlflow_runs_store_uris_are_made_relative_too(tmp_path):
    """logger=mlflow: the record names the project's SQLite store and artifact folder by URI."""
    root = tmp_path / "cluster-proj"
    record = make_record("20261125-010000-mlflow01")
    record["config"]["logger"] = {"mode": "offline", "dir": "sqlite:///mlflow/mlflow.db"}
    record["mlflow"] = {
        "run_id": "2da5b8c439e442a6af8ebd18e48fe558",
        "tracking_uri": f"sqlite:///{root}/mlflow/mlflow.db",
        "artifact_uri": f"file://{root}/mlflow/artifacts/2da5b8c4/artifacts",
    }
    out = portable_record(record)
    assert out["mlflow"] == {
        "run_id": "2da5b8c439e442a6af8ebd18e48fe558",
        "tracking_uri": "sqlite:///mlflow/mlflow.db",
        "artifact_uri": "mlflow/artifacts/2da5b8c4/artifacts",
    }
    assert out["config"] == record["config"]
