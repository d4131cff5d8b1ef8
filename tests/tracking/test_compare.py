"""`liveml compare`: varied params, sweep/task/status filters, sorting, the diff of two runs and
the CLI, over a real run store written with RunStore.save (records modelled on real ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liveml.tracking.compare import (
    CompareError,
    build_table,
    diff_runs,
    format_diff,
    format_table,
    format_value,
    load_run,
    load_runs,
    select,
    sort_table,
    table_json,
)
from liveml.tracking.runs import RunStore

from runrecords import (
    DATA_A,
    DATA_B,
    init_two_commits,
    make_record,
    save_runs,
)


def hydra_sweep(name: str, job: int, **overrides) -> dict:
    return {
        "name": name,
        "kind": "hydra",
        "job": job,
        "overrides": {k: str(v) for k, v in overrides.items()},
        "experiment": None,
    }


@pytest.fixture
def project(tiny_project):
    """A liveml project (conf/ only) in tmp_path / "proj"."""
    return tiny_project


@pytest.fixture
def store(project) -> RunStore:
    return RunStore.for_project(project)


@pytest.fixture
def sweep_store(store, tmp_path) -> RunStore:
    """Runs of two Hydra sweeps, an old string-shaped sweep, a DVC experiment and a lone run."""
    s1, s2 = "sweeps/2026-11-25_10-00-00", "sweeps/2026-11-25_11-00-00"
    records = [
        make_record("20261125-090000-00000001", sweep="/work/proj/multirun/2026-11-24_09-00-00"),
        make_record("20261125-100001-00000002", lr=0.001, sweep=hydra_sweep(s1, 0, lr=0.001)),
        make_record("20261125-100002-00000003", lr=0.01, sweep=hydra_sweep(s1, 1, lr=0.01)),
        make_record(
            "20261125-103000-00000004",
            lr=0.003,
            sweep={
                "name": "dvc:abcdef1",
                "kind": "dvc",
                "job": None,
                "overrides": {"tasks.defects.model.lr": "0.003"},
                "experiment": "lumpy-oak",
            },
        ),
        make_record("20261125-110001-00000005", batch_size=8, sweep=hydra_sweep(s2, 0)),
        make_record(
            "20261125-110002-00000006",
            batch_size=32,
            sweep=hydra_sweep(s2, 1),
            status="pruned",
            metrics={"train/loss": 1.2, "val/map": 0.1},
        ),
        make_record("20261125-120000-00000007", lr=0.02),
    ]
    save_runs(store, records, tmp_path)
    return store


def ids_of(runs) -> list[str]:
    return [r.id[-1] for r in runs]


# --- the table ----------------------------------------------------------------------------


def test_varied_params_are_the_differing_keys_without_paths_and_logger(store, tmp_path):
    save_runs(
        store,
        [
            make_record("20261125-010000-00000001", lr=0.001, brightness=0.8),
            make_record("20261125-020000-00000002", lr=0.01, brightness=1.0),
            make_record("20261125-030000-00000003", lr=0.01, brightness=1.0),
        ],
        tmp_path,
    )
    table = build_table(load_runs(store))
    assert table.of_kind("param") == ["model.lr", "data.capture.brightness"]
    assert table.keys == [
        "run",
        "task",
        "sweep",
        "status",
        "model.lr",
        "data.capture.brightness",
        "train/loss",
        "val/map",
        "val/map_50",
    ]
    assert [row["model.lr"] for row in table.rows] == [0.001, 0.01, 0.01]
    # Same code and data everywhere: no code/data columns; oldest first by default.
    assert [row["run"][-1] for row in table.rows] == ["1", "2", "3"]
    text = format_table(table)
    assert text.splitlines()[0].split()[:5] == ["run", "task", "sweep", "status", "model.lr"]
    assert "0.001" in text and "finished" in text


def test_code_and_data_columns_appear_only_when_they_differ(store, tmp_path):
    save_runs(
        store,
        [
            make_record("20261125-010000-00000001"),
            make_record("20261125-020000-00000002", commit="b" * 40, dirty=True),
            make_record("20261125-030000-00000003", data_hash=DATA_B),
        ],
        tmp_path,
    )
    table = build_table(load_runs(store))
    assert table.of_kind("param") == []
    assert [row["code"] for row in table.rows] == ["aaaaaaa", "bbbbbbb+dddd", "aaaaaaa"]
    assert [row["data"] for row in table.rows] == ["a18d03ff", "a18d03ff", "b6a27939"]
    two = build_table(load_runs(store)[:1] + load_runs(store)[2:])
    assert "code" not in two.keys and "data" in two.keys


def test_runs_of_two_tasks_list_shared_keys_not_each_tasks_whole_model(store, tmp_path):
    speech = make_record("20261125-020000-00000002", task="speech", lr=0.003)
    speech["config"]["model"] = {"name": "crnn_ctc", "n_mels": 64, "lr": 0.003, "batch_size": 16}
    save_runs(store, [make_record("20261125-010000-00000001"), speech], tmp_path)
    params = build_table(load_runs(store)).of_kind("param")
    assert "model.lr" in params and "model.name" in params
    assert "model.n_mels" not in params and "model.channels" not in params
    assert "task.name" not in params  # that is the task column


def test_metrics_globs_pick_the_metric_columns(sweep_store):
    table = build_table(load_runs(sweep_store), metrics=["val/*"])
    assert table.of_kind("metric") == ["val/map", "val/map_50"]
    with pytest.raises(CompareError, match=r"no metric matches test/\*; metrics: train/loss"):
        build_table(load_runs(sweep_store), metrics=["test/*"])


def test_format_value_is_compact():
    assert format_value(0.0034636319614946842) == "0.003464"
    assert format_value(123456.789) == "1.235e+05"
    assert format_value(30) == "30" and format_value(True) == "true"
    assert format_value([24, 48]) == "[24,48]" and format_value(None) == "null"


# --- filters ------------------------------------------------------------------------------


def test_sweep_filter_by_name_prefix_last_and_every_shape(sweep_store):
    runs = load_runs(sweep_store)
    assert ids_of(select(runs, sweep="last")) == ["5", "6"]
    assert ids_of(select(runs, sweep="sweeps/2026-11-25_10-00-00")) == ["2", "3"]
    assert ids_of(select(runs, sweep="sweeps/2026-11-25")) == ["2", "3", "5", "6"]
    # The short label shown in the table works too.
    assert ids_of(select(runs, sweep="2026-11-25_11")) == ["5", "6"]
    # Old records: the sweep is a plain string (its folder, here absolute).
    assert ids_of(select(runs, sweep="multirun/")) == ["1"]
    assert ids_of(select(runs, sweep="/work/proj/multirun/2026-11-24_09-00-00")) == ["1"]
    # DVC experiments: by the baseline name, or the experiment's own name.
    assert ids_of(select(runs, sweep="dvc:abcdef1")) == ["4"]
    assert ids_of(select(runs, sweep="lumpy-oak")) == ["4"]
    table = build_table(runs)
    labels = [row.get("sweep") for row in table.rows]
    assert labels == [
        "2026-11-24_09-00-00",
        "2026-11-25_10-00-00#0",
        "2026-11-25_10-00-00#1",
        "dvc:abcdef1/lumpy-oak",
        "2026-11-25_11-00-00#0",
        "2026-11-25_11-00-00#1",
        None,
    ]
    with pytest.raises(
        CompareError, match=r"no sweep matches .nope.; sweeps: .*dvc:abcdef1, sweeps/2026-11-25_10"
    ):
        select(runs, sweep="nope")


def test_sweep_last_within_a_task_and_status_filter(sweep_store, tmp_path):
    speech = make_record(
        "20261125-130000-00000008", task="speech", sweep=hydra_sweep("sweeps/speech", 0)
    )
    save_runs(sweep_store, [speech], tmp_path)
    runs = load_runs(sweep_store)
    assert ids_of(select(runs, sweep="last")) == ["8"]
    assert ids_of(select(runs, task="defects", sweep="last")) == ["5", "6"]
    assert ids_of(select(runs, sweep="last", task="defects", status="pruned")) == ["6"]
    assert ids_of(select(runs, status="finished"))[-1] == "8"  # a missing status is finished
    with pytest.raises(CompareError, match=r"no run of task 'audio'; tasks: defects, speech"):
        select(runs, task="audio")


# --- sorting ------------------------------------------------------------------------------


def test_sort_asc_and_desc_put_missing_values_last(sweep_store):
    # A list of runs: the in-memory table, whose cells this test edits (the index's table is
    # checked against it in test_index.py).
    table = build_table(list(load_runs(sweep_store)))
    up = sort_table(table, "val/map_50")
    # Run 6 was pruned before logging val/map_50: last both ways; ties keep the oldest first.
    assert [r["run"][-1] for r in up.rows] == ["1", "2", "3", "4", "5", "7", "6"]
    table.rows[2]["val/map_50"] = 0.9
    table.rows[4]["val/map_50"] = 0.7
    up = sort_table(table, "val/map_50")
    assert [r["run"][-1] for r in up.rows][:2] == ["5", "1"]
    assert [r["run"][-1] for r in up.rows][-2:] == ["3", "6"]
    down = sort_table(table, "val/map_50", desc=True)
    assert [r["run"][-1] for r in down.rows] == ["3", "1", "2", "4", "7", "5", "6"]
    assert [r.id for r in down.runs] == [r["run"] for r in down.rows]
    by_lr = sort_table(table, "model.lr", desc=True)
    assert [r["model.lr"] for r in by_lr.rows] == [0.02, 0.01, 0.004, 0.004, 0.004, 0.003, 0.001]
    assert len(by_lr.head(3).rows) == 3 and len(by_lr.head(3).runs) == 3
    # A diverged run (NaN) sorts with the missing ones, and JSON has null, not NaN.
    table.rows[0]["val/map_50"] = float("nan")
    assert [r["run"][-1] for r in sort_table(table, "val/map_50").rows][-2:] == ["1", "6"]
    assert json.loads(table_json(table))[0]["val/map_50"] is None


def test_bad_sort_key_lists_the_sortable_keys(sweep_store):
    table = build_table(load_runs(sweep_store))
    with pytest.raises(CompareError) as e:
        sort_table(table, "val/nope")
    msg = str(e.value)
    assert "cannot sort by 'val/nope'" in msg
    assert "model.lr" in msg and "val/map_50" in msg and "model.batch_size" in msg


# --- diff ---------------------------------------------------------------------------------


def test_diff_names_changed_hyperparameters_and_data(store, tmp_path):
    a = make_record("20261125-010000-00000001", lr=0.001, brightness=0.8)
    b = make_record("20261125-020000-00000002", lr=0.01, data_hash=DATA_B)
    b["config"]["model"]["dropout"] = 0.1
    del b["config"]["model"]["weight_decay"]
    save_runs(store, [a, b], tmp_path)
    ra, rb = load_run(store, "20261125-01"), load_run(store, "20261125-02")
    d = diff_runs(ra, rb)
    assert d["a"] == ra.id and d["b"] == rb.id
    assert d["code"]["changed"] is False and "log" not in d["code"]
    hyper = d["hyperparameters"]
    assert hyper["changed"] == [{"key": "model.lr", "a": 0.001, "b": 0.01}]
    assert hyper["only_a"] == {"model.weight_decay": 0.0001}
    assert hyper["only_b"] == {"model.dropout": 0.1}
    # The data recipe is reported with the data, not the hyperparameters; paths.* never.
    assert d["data"]["changed"] is True
    assert d["data"]["hashes"] == [{"path": "data/defects/raw", "a": DATA_A, "b": DATA_B}]
    assert d["data"]["recipe"]["changed"] == [
        {"key": "data.capture.brightness", "a": 0.8, "b": 1.0}
    ]
    text = format_diff(d)
    assert "code: unchanged" in text
    assert "model.lr  0.001 -> 0.01" in text and "only in B: model.dropout = 0.1" in text
    assert f"data/defects/raw  {DATA_A} -> {DATA_B}" in text
    assert "data.capture.brightness  0.8 -> 1" in text

    assert diff_runs(a, b)["hyperparameters"] == hyper  # plain run records work too
    same = diff_runs(ra, ra)
    assert "hyperparameters: unchanged" in format_diff(same)
    assert "data: unchanged" in format_diff(same)


@pytest.fixture
def two_commits(tmp_path) -> tuple[Path, str, str]:
    return init_two_commits(tmp_path / "repo")


def test_diff_code_has_git_log_and_stat_between_commits(store, tmp_path, two_commits):
    repo, first, second = two_commits
    save_runs(
        store,
        [
            make_record("20261125-010000-00000001", commit=first),
            make_record("20261125-020000-00000002", commit=second, dirty=True),
        ],
        tmp_path,
    )
    ra, rb = load_run(store, "20261125-01"), load_run(store, "20261125-02")
    code = diff_runs(ra, rb, repo=repo)["code"]
    assert code["changed"] is True
    assert code["a"]["commit"] == first and code["b"]["dirty"] is True
    assert code["log_range"] == f"{first[:7]}..{second[:7]}"
    assert code["log"] == [f"{second[:7]} raise the learning rate"]
    assert "train.py" in code["stat"] and "1 file changed" in code["stat"]
    # B older than A: the log shows the commits between them the other way round.
    back = diff_runs(rb, ra, repo=repo)["code"]
    assert back["log_range"] == f"{first[:7]}..{second[:7]}" and len(back["log"]) == 1
    text = format_diff(diff_runs(ra, rb, repo=repo))
    assert "raise the learning rate" in text and "uncommitted changes  none -> yes" in text
    # Not a git repo (or commits unknown there): the rest of the diff still works.
    assert "log" not in diff_runs(ra, rb, repo=tmp_path / "proj")["code"]


# --- the CLI ------------------------------------------------------------------------------


def liveml(project, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    return subprocess.run(
        [sys.executable, "-m", "liveml", "compare", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("liveml compare: error: ")
    for f in fragments:
        assert f in out.stderr, out.stderr


def test_cli_table_sort_limit_and_json(project, sweep_store):
    out = liveml(project, "--sweep", "sweeps/", "--sort", "model.lr", "--desc", "--limit", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == [
        "run",
        "task",
        "sweep",
        "status",
        "model.lr",
        "model.batch_size",
    ]
    assert [line.split()[0][-1] for line in lines[1:]] == ["3", "5", "6"]

    out = liveml(project, "--json", "--sort", "val/map_50", "--desc", "--metrics", "val/*")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 7 and rows[-1]["run"].endswith("6")  # pruned: no val/map_50, last
    assert list(rows[0])[:4] == ["run", "task", "sweep", "status"]
    assert "train/loss" not in rows[0] and rows[0]["val/map_50"] == 0.8
    assert rows[-1]["status"] == "pruned" and "val/map_50" not in rows[-1]

    out = liveml(project, "--desc", "--json")  # without --sort: newest first
    assert [r["run"][-1] for r in json.loads(out.stdout)] == list("7654321")

    out = liveml(project, "20261125-10", "--json")  # positional id prefixes
    assert out.returncode == 2 and "ambiguous" in out.stderr
    out = liveml(project, "20261125-100001", "20261125-1200", "--json")
    assert [r["run"][-1] for r in json.loads(out.stdout)] == ["2", "7"]


def test_cli_errors_are_one_clear_line(project, sweep_store):
    assert_one_line_error(
        liveml(project, "--sort", "val/nope"), "cannot sort by 'val/nope'", "val/map_50"
    )
    assert_one_line_error(liveml(project, "--sweep", "nope"), "no sweep matches 'nope'", "last")
    assert_one_line_error(liveml(project, "--status", "crashed"), "statuses: finished, pruned")
    assert_one_line_error(liveml(project, "--limit", "0"), "--limit")
    assert_one_line_error(liveml(project, "--diff", "zzz", "20261125-12"), "no run matches 'zzz'")


def test_cli_empty_store_says_how_to_train(project):
    # An empty store is not an error (exit 0): stdout holds the empty answer, stderr says how.
    out = liveml(project)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert "no runs in" in out.stderr and "liveml.training" in out.stderr
    out = liveml(project, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr


def test_cli_diff_and_html(project, store, tmp_path):
    save_runs(
        store,
        [
            make_record("20261125-010000-00000001", lr=0.001),
            make_record("20261125-020000-00000002", lr=0.01, data_hash=DATA_B),
        ],
        tmp_path,
    )
    out = liveml(project, "--diff", "20261125-01", "20261125-02")
    assert out.returncode == 0, out.stderr
    assert "code: unchanged" in out.stdout and "model.lr  0.001 -> 0.01" in out.stdout
    assert DATA_B in out.stdout
    out = liveml(project, "--diff", "20261125-01", "20261125-02", "--json")
    assert json.loads(out.stdout)["hyperparameters"]["changed"][0]["key"] == "model.lr"

    out = liveml(project, "--html", "report/compare.html")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("run ") and "wrote report/compare.html" in out.stderr
    page = (project.root / "report" / "compare.html").read_text()
    assert page.startswith("<!doctype html>") and "20261125-020000-00000002" in page
