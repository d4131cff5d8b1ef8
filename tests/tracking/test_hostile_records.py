"""Run records are data, not trusted input: a bad run.json is skipped and named (never a
traceback), and a recorded commit reaches git only as a commit hash (never as an option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liveml.tracking.compare import diff_runs, git_between, load_runs
from liveml.tracking.runs import BadRecordError, RunNotFoundError, RunStore, record_problem

from runrecords import git, make_record, save_runs

GOOD = ["20261125-010000-00000001", "20261125-030000-00000003", "20261125-050000-00000005"]

# Each kind of bad run.json: (folder name, file bytes, what the warning must say).
BAD = [
    ("20261125-000000-truncated", b'{"run_id": "20261125-000000-trunc', "not valid JSON"),
    ("20261125-000001-list", b"[]", "not a JSON object but a list"),
    ("20261125-000002-empty-object", b"{}", "no run_id"),
    ("20261125-000003-empty-file", b"", "not valid JSON"),
    ("20261125-000004-not-utf8", b'{"run_id": "\xff\xfe"}', "not valid JSON"),
    ("20261125-020000-metrics-str", None, "metrics is a string, expected an object or null"),
    ("20261125-020001-metric-value", None, "metric 'val/map' is a string, expected a number"),
    ("20261125-020002-run-id-int", None, "run_id is an integer, expected a string"),
    ("20261125-020003-code-list", None, "code is a list"),
    ("20261125-020004-commit-int", None, "code.commit is an integer"),
    ("20261125-020005-fingerprint-null", None, "fingerprint is null, expected a string"),
    ("20261125-020006-sweep-list", None, "sweep is a list"),
    ("20261125-020007-config-str", None, "config is a string"),
    ("20261125-020008-task-int", None, "task is an integer"),
    ("20261125-040000-data-list", None, "data is a list"),
    ("20261125-040001-sweep-job-str", None, "sweep.job is a string"),
]

# The wrong-typed fields of the records above that are otherwise well-formed.
WRONG_FIELDS = {
    "metrics-str": {"metrics": "0.5"},
    "metric-value": {"metrics": {"val/map": "high"}},
    "run-id-int": {"run_id": 20261125},
    "code-list": {"code": ["a" * 40]},
    "commit-int": {"code": {"commit": 1234567, "dirty": False, "diff_sha256": None}},
    "fingerprint-null": {"fingerprint": None},
    "sweep-list": {"sweep": ["sweeps/a", 0]},
    "config-str": {"config": "lr=0.1"},
    "task-int": {"task": 3},
    "data-list": {"data": ["data/defects/raw"]},
    "sweep-job-str": {"sweep": {"name": "sweeps/a", "kind": "hydra", "job": "zero"}},
}


@pytest.fixture
def project(tiny_project):
    return tiny_project


@pytest.fixture
def store(project) -> RunStore:
    return RunStore.for_project(project)


@pytest.fixture
def mixed_store(store, tmp_path) -> RunStore:
    """Three good runs (two tasks) among one bad run.json of each kind."""
    save_runs(
        store,
        [
            make_record(GOOD[0], lr=0.001),
            make_record(GOOD[1], lr=0.01),
            make_record(GOOD[2], task="speech", metrics={"val/cer": 0.3}),
        ],
        tmp_path,
    )
    for name, raw, _ in BAD:
        folder = store.path / name
        folder.mkdir()
        if raw is None:
            record = make_record(name, lr=0.5)
            record.update(WRONG_FIELDS[name.split("-", 2)[2]])
            raw = json.dumps(record).encode()
        (folder / "run.json").write_bytes(raw)
    return store


def liveml(project, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    return subprocess.run(
        [sys.executable, "-m", "liveml", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_bad_records_named(stderr: str, store: RunStore) -> None:
    """One warning line per bad record, naming its file and what is wrong."""
    assert "Traceback" not in stderr, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("liveml: warning:")]
    assert len(warnings) == len(BAD), stderr
    for name, _, problem in BAD:
        (line,) = [w for w in warnings if str(store.path / name / "run.json") in w]
        assert problem in line, line


# --- one bad run.json never breaks the store, `liveml runs` or `liveml compare` -----------


def test_store_skips_and_names_each_bad_record(mixed_store, capsys):
    assert [r["run_id"] for r in mixed_store.list()] == GOOD
    assert_bad_records_named(capsys.readouterr().err, mixed_store)

    errors: list[BadRecordError] = []
    assert [r["run_id"] for r in mixed_store.list(on_bad=errors.append)] == GOOD
    assert len(errors) == len(BAD) and capsys.readouterr().err == ""
    # Named explicitly, a bad record is an error that says which file and why (a lookup
    # error, so the CLI reports it in one line).
    with pytest.raises(BadRecordError, match=r"list.*not a JSON object") as e:
        mixed_store.get("20261125-000001-list")
    assert isinstance(e.value, RunNotFoundError)
    assert record_problem(make_record(GOOD[0])) is None


def test_compare_loads_the_good_runs_around_bad_ones(mixed_store, capsys):
    assert [r.id for r in load_runs(mixed_store)] == GOOD
    assert_bad_records_named(capsys.readouterr().err, mixed_store)
    with pytest.raises(BadRecordError, match="metrics is a string"):
        load_runs(mixed_store, ["20261125-020000-metrics-str"])


def test_cli_runs_and_compare_list_the_good_runs(project, mixed_store, tmp_path):
    out = liveml(project, "runs")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == GOOD
    assert_bad_records_named(out.stderr, mixed_store)

    out = liveml(project, "runs", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["run_id"] for r in json.loads(out.stdout)] == GOOD
    assert_bad_records_named(out.stderr, mixed_store)

    out = liveml(project, "compare")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == GOOD
    assert_bad_records_named(out.stderr, mixed_store)

    out = liveml(project, "compare", "--task", "defects", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["run"] for r in json.loads(out.stdout)] == GOOD[:2]
    assert_bad_records_named(out.stderr, mixed_store)

    out = liveml(project, "compare", "--html", str(tmp_path / "report.html"))
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == GOOD
    assert_bad_records_named(out.stderr, mixed_store)
    page = (tmp_path / "report.html").read_text()
    assert all(run_id in page for run_id in GOOD)

    # A bad record named on the command line: one error line naming it, exit 2.
    out = liveml(project, "compare", "--diff", GOOD[0], "20261125-000000-truncated")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "truncated/run.json: not valid JSON" in out.stderr


def test_cli_compare_with_only_bad_records_says_so(project, store):
    folder = store.path / "20261125-000000-broken"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{")
    out = liveml(project, "compare")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "1 unusable run record(s) skipped" in out.stderr
    out = liveml(project, "runs")
    assert out.returncode == 0 and "broken/run.json: not valid JSON" in out.stderr


def test_bad_metrics_csv_does_not_break_the_report(project, store, tmp_path, capsys):
    from liveml.tracking.compare import build_table
    from liveml.tracking.compare_report import render_report

    (folder,) = [store.path / i for i in save_runs(store, [make_record(GOOD[0])], tmp_path)]
    (folder / "metrics.csv").write_bytes(b"step,val/map\n\xff\xfe\x00,1\n")
    html = render_report(build_table(load_runs(store)))
    assert GOOD[0] in html and '"curves":{"20261125-010000-00000001":{}}' in html
    assert "unreadable" in capsys.readouterr().err


# --- a recorded commit never reaches git as an option -------------------------------------


@pytest.fixture
def git_project(project) -> tuple[Path, str]:
    """The project as a git repo with one commit: (root, its commit)."""
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "conf")
    return project.root, git(project.root, "rev-parse", "HEAD")


def test_hostile_commit_is_refused_not_passed_to_git(project, store, git_project, tmp_path):
    root, head = git_project
    trap = tmp_path / "trap"
    trap.mkdir()
    hostile = f"--output={trap}/pwned"
    save_runs(
        store,
        [make_record(GOOD[0], commit=hostile), make_record(GOOD[1], commit=head)],
        tmp_path,
    )

    out = liveml(project, "compare", "--diff", GOOD[0], GOOD[1])
    assert not list(trap.iterdir()), "git was handed the record's commit as an option"
    assert out.returncode == 0, out.stderr
    assert "invalid commit in A:" in out.stdout and "not a valid commit hash" in out.stdout
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("  commit  ")]
    assert line.startswith("  commit  '--output=") and line.endswith(f"... -> {head}"), line
    out = liveml(project, "compare", "--diff", GOOD[1], GOOD[0], "--json")
    assert out.returncode == 0, out.stderr
    (problem,) = json.loads(out.stdout)["code"]["invalid"]
    assert problem.startswith("B: code.commit") and "not a valid commit hash" in problem

    out = liveml(project, "compare", "--html", str(tmp_path / "report.html"))
    assert not list(trap.iterdir()), "git was handed the record's commit as an option"
    assert out.returncode == 0, out.stderr
    assert f"run {GOOD[0]}: code.commit '--output=" in out.stderr
    assert "is not a valid commit hash (7-64 hex digits); left out of" in out.stderr
    assert "invalid" in out.stdout  # the code column's label of that run

    # The library functions refuse it too.
    assert git_between(root, hostile, head) == {}
    assert "log" not in diff_runs(make_record("a", commit=hostile), make_record("b"), root)["code"]
    assert not list(trap.iterdir())


def test_valid_commits_still_get_log_and_stat(project, store, git_project, tmp_path):
    root, first = git_project
    (root / "train.py").write_text("lr = 0.1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "add train.py")
    second = git(root, "rev-parse", "HEAD")
    found = git_between(root, first[:7], second)
    assert found["log"] == [f"{second[:7]} add train.py"] and "train.py" in found["stat"]


def test_lineage_and_reproduce_name_a_bad_record(project, mixed_store):
    from liveml.tracking.reproduce import reproduce

    out = liveml(project, "lineage", "20261125-000001-list")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "list/run.json: not a JSON object but a list" in out.stderr
    # A record without a config (e.g. a retrain decision) is not something to retrain.
    mixed_store.save({"run_id": "20261125-060000-retrain-defects", "kind": "retrain"})
    with pytest.raises(BadRecordError, match="no config or data to retrain from"):
        reproduce("20261125-060000-retrain", project)
