"""The run store's SQLite index: `liveml compare` answers from it exactly as from the run.json
files; writers keep it current; it is rebuilt when missing, stale or damaged; bad records never
enter it; readers see whole runs while writer processes publish."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from liveml.tracking import index as idx
from liveml.tracking.compare import (
    CompareError,
    IndexedRuns,
    IndexedTable,
    build_table,
    format_table,
    load_runs,
    select,
    sort_table,
    table_json,
)
from liveml.tracking.index import RunIndex
from liveml.tracking.runs import RunStore

from runrecords import DATA_B, make_record, save_runs, write_metrics_csv


def hydra(name: str, job: int) -> dict:
    return {"name": name, "kind": "hydra", "job": job, "overrides": {}, "experiment": None}


def varied_records() -> list[dict]:
    """Runs covering what the table has to get right: two tasks, sweeps of every shape,
    statuses, values of every JSON type (1 vs 1.0, -0.0, bools, nulls, lists, long and
    non-ASCII strings), keys missing in some runs, NaN and missing metrics, code and data
    changes, a key that only starts varying late (promoted to a column of its own)."""
    out = []
    for i in range(24):
        task = "speech" if i % 5 == 3 else "defects"
        r = make_record(
            f"202611{25 + i // 10:02d}-{i:02d}0000-{i:08x}",
            task=task,
            lr=[0.001, 0.01, 0.004, 1e-5][i % 4],
            batch_size=[8, 16][i % 2],
            brightness=[1, 1.0, 0.8][i % 3],  # 1 == 1.0: not varied by that alone
            commit=("b" if i > 15 else "a") * 40,
            dirty=i == 20,
            data_hash=DATA_B if i == 22 else make_record("x")["data"]["data/defects/raw"],
            sweep=[
                None,
                hydra("sweeps/2026-11-25_10-00-00", i),
                hydra("sweeps/2026-11-26_10-00-00", i),
                "/work/proj/multirun/2026-11-24_09-00-00",
                {
                    "name": "dvc:abcdef1",
                    "kind": "dvc",
                    "job": None,
                    "overrides": {},
                    "experiment": f"exp-{i}",
                },
            ][i % 5],
            status=["finished", None, "pruned", "failed"][i % 4],
            metrics={
                "train/loss": 1.0 / (i + 1),
                "val/map": float("nan") if i == 7 else i / 30,
                **({"val/map_50": round(0.5 + i / 100, 3)} if i % 6 else {}),
            },
        )
        model = r["config"]["model"]
        model["dropout"] = [0.0, -0.0, 0.1][i % 3]
        model["amp"] = [True, False, None][i % 3]
        model["note"] = ["short", "a much longer free-text note than any cell", "ünïcødé ✓"][i % 3]
        if i % 7 == 0:
            model["extra_layers"] = [i, i + 1]
        if i >= 18:
            r["config"]["trainer"]["max_epochs"] = 50  # constant until run 18
        if i == 9:
            r["config"].pop("trainer")
        out.append(r)
    return out


SELECTIONS = [
    {},
    {"task": "defects"},
    {"task": "speech"},
    {"status": "pruned"},
    {"sweep": "last"},
    {"sweep": "sweeps/"},
    {"sweep": "2026-11-26"},
    {"sweep": "multirun/"},
    {"sweep": "exp-4"},
    {"task": "defects", "status": "finished"},
]


def assert_same_answers(store: RunStore) -> None:
    """Every selection, sort and limit: the index's text and JSON equal the files' ones."""
    indexed = load_runs(store)
    assert isinstance(indexed, IndexedRuns)
    files = list(indexed)  # the same runs, read from their run.json files
    assert [r.id for r in files] == sorted(r.id for r in files)
    for selection in SELECTIONS:
        a, b = select(indexed, **selection), select(files, **selection)
        assert len(a) == len(b), selection
        ta, tb = build_table(a), build_table(b)
        assert isinstance(ta, IndexedTable)
        assert ta.keys == tb.keys, selection
        assert format_table(ta) == format_table(tb), selection
        assert table_json(ta) == table_json(tb), selection
        assert ta.rows == json.loads(json.dumps(tb.rows)) or _nan_rows(ta.rows, tb.rows)
        for key in tb.keys:
            for desc in (False, True):
                sa, sb = sort_table(ta, key, desc), sort_table(tb, key, desc)
                assert format_table(sa) == format_table(sb), (selection, key, desc)
                assert table_json(sa.head(3)) == table_json(sb.head(3)), (selection, key)
                assert [r.id for r in sa.head(4).runs] == [r.id for r in sb.head(4).runs]
        metrics = build_table(a, metrics=["val/*"]), build_table(b, metrics=["val/*"])
        assert format_table(metrics[0]) == format_table(metrics[1])


def _nan_rows(a: list[dict], b: list[dict]) -> bool:
    same = lambda x, y: x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))  # noqa: E731
    return all(
        ra.keys() == rb.keys() and all(same(ra[k], rb[k]) for k in ra)
        for ra, rb in zip(a, b, strict=True)
    )


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_index_answers_exactly_like_the_run_files(store, tmp_path):
    records = varied_records()
    save_runs(store, records[:2], tmp_path)
    load_runs(store)  # builds the index from the two folders
    assert idx.index_path(store.path).is_file()
    # The rest arrive through the writers: keys turn into columns as they start to vary.
    save_runs(store, records[2:], tmp_path)
    assert_same_answers(store)
    # Removing runs (out of band) recounts what varies.
    for name in sorted(os.listdir(store.path))[-6:]:
        if not name.startswith("."):
            shutil.rmtree(store.path / name)
    assert_same_answers(store)


def test_index_built_from_scratch_equals_the_one_writers_kept(store, tmp_path):
    records = varied_records()
    save_runs(store, records[:1], tmp_path)
    load_runs(store)
    save_runs(store, records[1:], tmp_path)
    kept = format_table(build_table(load_runs(store)))
    shutil.rmtree(store.path / idx.INDEX_DIR)
    assert format_table(build_table(load_runs(store))) == kept
    assert idx.index_path(store.path).is_file()


def rows_in_index(store: RunStore) -> list[str]:
    con = sqlite3.connect(idx.index_path(store.path))
    try:
        return [f for (f,) in con.execute("SELECT folder FROM runs ORDER BY folder")]
    finally:
        con.close()


def test_writers_update_an_existing_index_and_never_create_one(store, tmp_path):
    save_runs(store, [make_record("20261125-010000-00000001")], tmp_path)
    assert not (store.path / idx.INDEX_DIR).exists()  # a writer never builds it
    load_runs(store)
    save_runs(store, [make_record("20261125-020000-00000002", lr=0.1)], tmp_path)
    # In the index without any reader having looked at the folder again.
    assert rows_in_index(store) == ["20261125-010000-00000001", "20261125-020000-00000002"]


def test_out_of_band_changes_are_picked_up(store, tmp_path):
    ids = save_runs(
        store,
        [make_record(f"20261125-0{i}0000-0000000{i}", lr=i / 100) for i in range(1, 5)],
        tmp_path,
    )
    assert [r.id for r in load_runs(store)] == ids
    # Copied in (rsync from a cluster), removed by hand: the folder's listing changes.
    shutil.copytree(store.path / ids[0], store.path / "20261125-090000-copied")
    shutil.rmtree(store.path / ids[1])
    got = [r.id for r in load_runs(store)]
    assert got == [ids[0], ids[0], ids[2], ids[3]]  # the copy keeps its record's run_id
    assert "20261125-090000-copied" in rows_in_index(store)
    # A record replaced inside its folder: found by a full check.
    record = json.loads((store.path / ids[2] / "run.json").read_text())
    record["metrics"]["val/map"] = 0.99
    (store.path / ids[2] / "run.json").write_text(json.dumps(record))
    with RunIndex(store.path).open() as index:
        assert index.sync(full=True)["added"] == 1
    table = json.loads(table_json(build_table(select(load_runs(store), sweep=None))))
    assert [r["val/map"] for r in table if r["run"] == ids[2]] == [0.99]


def test_missing_damaged_or_foreign_index_is_rebuilt(store, tmp_path):
    save_runs(
        store,
        [make_record("20261125-010000-00000001"), make_record("20261125-020000-00000002", lr=0.1)],
        tmp_path,
    )
    expected = format_table(build_table(load_runs(store)))
    file = idx.index_path(store.path)
    for damage in ("garbage", "schema", "delete"):
        if damage == "garbage":
            for suffix in ("-wal", "-shm"):
                idx.Path(f"{file}{suffix}").unlink(missing_ok=True)
            file.write_bytes(b"this is not a database" * 100)
        elif damage == "schema":
            con = sqlite3.connect(file)
            con.execute("PRAGMA user_version=999")
            con.close()
        else:
            shutil.rmtree(file.parent)
        assert format_table(build_table(load_runs(store))) == expected, damage
    # The index found under another folder (copied along with the runs, then a record edited
    # there in place): every record is checked against it, not just the listing.
    other = RunStore(tmp_path / "elsewhere" / "runs")
    shutil.copytree(store.path, other.path)
    edited = other.path / "20261125-020000-00000002" / "run.json"
    record = json.loads(edited.read_text())
    edited.write_text(json.dumps({**record, "status": "pruned"}))
    os.utime(other.path, ns=(time.time_ns() - 10**10,) * 2)  # an old, trusted-looking mtime
    rows = json.loads(table_json(build_table(load_runs(other))))
    assert [r["status"] for r in rows] == ["finished", "pruned"]


def test_bad_records_stay_out_of_the_index_until_fixed(store, tmp_path, capsys):
    save_runs(store, [make_record("20261125-010000-00000001")], tmp_path)
    bad = store.path / "20261125-020000-broken"
    bad.mkdir()
    (bad / "run.json").write_text('{"run_id": "20261125-020000-brok')
    for _ in range(2):  # named on every read, from the index's list of bad records
        assert [r.id for r in load_runs(store)] == ["20261125-010000-00000001"]
        err = capsys.readouterr().err
        assert f"{bad / 'run.json'}: not valid JSON" in err and err.count("warning") == 1
    assert rows_in_index(store) == ["20261125-010000-00000001"]
    # Fixed in place (the folder listing does not change): re-checked, then indexed.
    (bad / "run.json").write_text(json.dumps(make_record("20261125-020000-broken", lr=0.5)))
    assert [r.id for r in load_runs(store)][-1] == "20261125-020000-broken"
    assert capsys.readouterr().err == ""
    assert store.resolve("20261125-020000-b") == bad / "run.json"  # prefixes via the index


def test_unusable_index_falls_back_to_the_files(store, tmp_path, capsys):
    save_runs(store, [make_record("20261125-010000-00000001")], tmp_path)
    (store.path / idx.INDEX_DIR).write_text("a file where the index folder goes")
    runs = load_runs(store)
    assert not isinstance(runs, IndexedRuns) and [r.id for r in runs] == [
        "20261125-010000-00000001"
    ]
    assert "run index not used" in capsys.readouterr().err
    os.environ["LIVEML_RUN_INDEX"] = "off"
    try:
        assert not isinstance(load_runs(store), IndexedRuns)
        assert capsys.readouterr().err == ""
    finally:
        del os.environ["LIVEML_RUN_INDEX"]


def test_errors_of_selections_match(store, tmp_path):
    save_runs(store, varied_records()[:8], tmp_path)
    indexed, files = load_runs(store), list(load_runs(store))
    for selection in (
        {"task": "audio"},
        {"sweep": "nope"},
        {"status": "crashed"},
        {"task": "speech", "status": "pruned"},
    ):
        with pytest.raises(CompareError) as a:
            select(indexed, **selection)
        with pytest.raises(CompareError) as b:
            select(files, **selection)
        assert str(a.value) == str(b.value)
    with pytest.raises(CompareError, match="no metric matches"):
        build_table(indexed, metrics=["test/*"])
    with pytest.raises(CompareError, match="cannot sort by 'nope'"):
        sort_table(build_table(indexed), "nope")


# --- processes ----------------------------------------------------------------------------


def _writer(args) -> str:
    root, i, log = args
    rec = make_record(
        "20261125-153012-ab12cd34",
        lr=0.01 * (i + 1),  # never make_record's default (0.004): lr varies in every read
        sweep=hydra("sweeps/s", i),
        metrics={"val/map": i / 10},
    )
    return RunStore(root).save(rec, files={"metrics.csv": log}).name


def test_readers_see_whole_runs_while_8_processes_publish(store, tmp_path):
    """What `liveml compare` shows while a sweep's 8 jobs finish at once: whole runs only,
    never fewer than a moment before, and all 8 at the end."""
    save_runs(store, [make_record("20261125-010000-00000001")], tmp_path)
    load_runs(store)  # an index the writers keep
    log = write_metrics_csv(tmp_path / "big.csv", steps=20_000)
    with mp.get_context("fork").Pool(8) as pool:
        pending = pool.map_async(_writer, [(store.path, i, log) for i in range(8)])
        seen, reads = 1, 0
        while not pending.ready():
            reads += 1
            rows = json.loads(table_json(build_table(load_runs(store))))
            assert len(rows) >= seen
            seen = len(rows)
            for row in rows[1:]:
                assert row["sweep"].startswith("s#") and "model.lr" in row
                folder = store.path / row["run"]
                assert (folder / "metrics.csv").stat().st_size == log.stat().st_size
        names = pending.get()
    assert reads > 0
    rows = json.loads(table_json(build_table(load_runs(store))))
    assert len(rows) == 9 and sorted(r["run"] for r in rows[1:]) == sorted(names)
    assert sorted(rows_in_index(store)) == sorted([*names, "20261125-010000-00000001"])


def test_two_processes_build_the_index_at_once(tiny_project, tmp_path):
    store = RunStore.for_project(tiny_project)
    save_runs(store, varied_records(), tmp_path)
    env = {**os.environ, "LIVEML_ROOT": str(tiny_project.root)}
    cmd = [sys.executable, "-m", "liveml", "compare", "--json"]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=tiny_project.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and len(json.loads(outs[0][0])) == 24
    off = subprocess.run(
        cmd,
        cwd=tiny_project.root,
        env={**env, "LIVEML_RUN_INDEX": "off"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert off.stdout == outs[0][0]


def test_a_new_folder_seen_within_the_clock_tick_of_the_last_check(store, tmp_path):
    """The gate trusts the runs folder's mtime only once it is older than SETTLE_NS."""
    save_runs(store, [make_record("20261125-010000-00000001")], tmp_path)
    with RunIndex(store.path).open() as index:
        index.sync()
        assert index._meta("gate") is None  # just changed: not trusted yet
    os.utime(store.path, ns=(time.time_ns() - 10**10, time.time_ns() - 10**10))
    with RunIndex(store.path).open() as index:
        index.sync()
        assert index._meta("gate") is not None
    # An out-of-band folder whose arrival does not move the mtime (restored by hand): missed
    # by the gate, found by a full check.
    st = os.stat(store.path)
    shutil.copytree(store.path / "20261125-010000-00000001", store.path / "20261125-0200-copy")
    os.utime(store.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(load_runs(store)) == 1
    with RunIndex(store.path).open() as index:
        index.sync(full=True)
    assert len(load_runs(store)) == 2
