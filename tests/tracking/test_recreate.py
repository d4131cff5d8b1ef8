"""Re-creating a run's parts: its code (commit + stored uncommitted diff) in a git worktree,
its data from the DVC cache or the DVC remote. Real git and DVC in tmp_path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from liveml.core.project import Project
from liveml.tracking.lineage import PATCH_MAX_BYTES, code_state, code_state_and_patch, data_hashes
from liveml.tracking.recreate import (
    RecreateError,
    checkout_code,
    checkout_data,
    code_matches,
    remove_worktree,
)

from gitrepo import git

DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repo that is a liveml project (conf/config.yaml), with text and binary files."""
    r = tmp_path / "repo"
    (r / "conf").mkdir(parents=True)
    (r / "conf" / "config.yaml").write_text("seed: 0\n")
    (r / ".gitignore").write_text("ignored/\n")
    (r / "train.py").write_text("print('v1')\n")
    (r / "gone.py").write_text("x = 1\n")
    (r / "old_name.py").write_text("y = 2\n" * 20)
    (r / "blob.bin").write_bytes(bytes(range(256)) * 3)
    (r / "params.yaml").write_text("lr: 0.1\n")
    git(r, "init", "-q")
    git(r, "add", ".")
    git(r, "commit", "-qm", "init")
    return r


def record_of(root: Path, run_id: str = "run-x") -> dict:
    code, patch = code_state_and_patch(root)
    return {"run_id": run_id, "code": code, "code_patch": patch, "config": {}}


def edit(r: Path) -> None:
    """Every kind of uncommitted change: edits (staged and not), a deletion, a rename, binary
    and non-UTF-8 content, untracked text, binary and empty files."""
    (r / "train.py").write_text("print('v2')  # édité\n")
    (r / "blob.bin").write_bytes(bytes(range(255, -1, -1)) * 5)
    (r / "gone.py").unlink()
    git(r, "mv", "old_name.py", "new_name.py")
    (r / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (r / "pkg").mkdir()
    (r / "pkg" / "new.py").write_text("Z = 3\n")
    (r / "pkg" / "weights.bin").write_bytes(b"\x00\xff" * 100)
    (r / "pkg" / "empty.txt").write_bytes(b"")
    (r / "ignored").mkdir()
    (r / "ignored" / "junk").write_text("not code\n")
    (r / "params.yaml").write_text("lr: 0.5\n")  # pipeline-written: not code
    git(r, "add", "train.py")


def test_the_stored_diff_recreates_the_dirty_tree_exactly(repo, tmp_path):
    edit(repo)
    record = record_of(repo)
    assert record["code"]["dirty"] is True
    patch = record["code_patch"]
    assert patch["patch"] and patch["omitted"] is None and patch["bytes"] < PATCH_MAX_BYTES
    assert patch["encoding"] == "base64"  # latin-1 bytes: not UTF-8 text
    assert "ignored/junk" not in str(record)  # git-ignored files are not code

    project = Project(repo)
    root = checkout_code(project, record, tmp_path / "wt")
    try:
        state, ok = code_matches(record, root)
        assert ok, (state, record["code"])
        assert state == record["code"]
        assert (root / "train.py").read_text() == "print('v2')  # édité\n"
        assert (root / "pkg" / "weights.bin").read_bytes() == b"\x00\xff" * 100
        assert (root / "pkg" / "empty.txt").is_file()
        assert not (root / "gone.py").exists() and (root / "new_name.py").is_file()
        assert (root / "blob.bin").read_bytes() == (repo / "blob.bin").read_bytes()
    finally:
        remove_worktree(project, tmp_path / "wt")
    assert not (tmp_path / "wt").exists()
    assert "wt" not in git(repo, "worktree", "list")
    # The original tree is untouched.
    assert code_state(repo) == record["code"]


def test_a_clean_run_has_no_patch_and_checks_out(repo, tmp_path):
    record = record_of(repo)
    assert record["code"]["dirty"] is False and record["code_patch"] is None
    project = Project(repo)
    root = checkout_code(project, record, tmp_path / "wt")
    try:
        assert code_matches(record, root)[1]
    finally:
        remove_worktree(project, tmp_path / "wt")


def test_the_patch_is_utf8_text_when_it_can_be(repo):
    (repo / "train.py").write_text("print('ünïcode')\n")
    patch = record_of(repo)["code_patch"]
    assert patch["encoding"] == "utf-8" and "ünïcode" in patch["patch"]


def test_a_project_in_a_subfolder_of_its_repo(tmp_path):
    top = tmp_path / "mono"
    proj = top / "ml" / "proj"
    (proj / "conf").mkdir(parents=True)
    (proj / "conf" / "config.yaml").write_text("seed: 0\n")
    (top / "other.txt").write_text("elsewhere\n")
    git(top, "init", "-q")
    git(top, "add", ".")
    git(top, "commit", "-qm", "init")
    (proj / "conf" / "config.yaml").write_text("seed: 1\n")
    (proj / "added.py").write_text("A = 1\n")
    record = record_of(proj)
    project = Project(proj)
    root = checkout_code(project, record, tmp_path / "wt")
    try:
        assert root == (tmp_path / "wt" / "ml" / "proj").resolve()
        assert code_matches(record, root)[1]
        assert (root / "added.py").read_text() == "A = 1\n"
    finally:
        remove_worktree(project, tmp_path / "wt")


def test_oversized_changes_are_not_stored_and_the_run_is_refused(repo, tmp_path, monkeypatch):
    import liveml.tracking.lineage as lineage

    monkeypatch.setattr(lineage, "PATCH_MAX_BYTES", 1000)
    (repo / "big.txt").write_text("x" * 2000)
    record = record_of(repo, "run-big")
    assert record["code_patch"]["patch"] is None
    why = record["code_patch"]["omitted"]
    assert "over the 1000-byte bound" in why
    assert "the largest: big.txt 2000 bytes" in why  # names what to commit or ignore
    with pytest.raises(RecreateError, match="run run-big was trained on uncommitted changes"):
        checkout_code(Project(repo), record, tmp_path / "wt")
    assert not (tmp_path / "wt").exists()


def test_a_dirty_run_recorded_before_diffs_were_kept_is_refused(repo, tmp_path):
    (repo / "train.py").write_text("print('v2')\n")
    record = {"run_id": "old-run", "code": code_state(repo), "config": {}}  # no code_patch
    with pytest.raises(RecreateError) as e:
        checkout_code(Project(repo), record, tmp_path / "wt")
    msg = str(e.value)
    assert "run old-run was trained on uncommitted changes that its record does not store" in msg
    assert "recorded before liveml kept diffs" in msg and "commit the changes" in msg


def test_a_record_commit_that_is_not_a_hash_never_reaches_git(repo, tmp_path):
    record = record_of(repo)
    record["code"]["commit"] = "--output=/tmp/pwned"
    with pytest.raises(RecreateError, match="not a valid commit hash"):
        checkout_code(Project(repo), record, tmp_path / "wt")


def test_an_unknown_commit_is_a_clear_error(repo, tmp_path):
    record = record_of(repo)
    record["code"]["commit"] = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(RecreateError, match="cannot check out commit 0123456789"):
        checkout_code(Project(repo), record, tmp_path / "wt")


# --- data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_origin(tmp_path_factory) -> Path:
    """A git + DVC repo with a tracked folder and file (`dvc add`, through DVC's Python API:
    the CLI takes seconds per call to start) and a local DVC remote, made once per module."""
    from dvc.repo import Repo

    r = tmp_path_factory.mktemp("dvc") / "dvcrepo"
    (r / "conf").mkdir(parents=True)
    (r / "conf" / "config.yaml").write_text("seed: 0\n")
    git(r, "init", "-q")
    data = r / "data" / "raw"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)
    (r / "single.bin").write_bytes(b"\x00one file\r\n")
    Repo.init(str(r)).close()
    with Repo(str(r)) as repo:
        repo.add([str(r / "data" / "raw"), str(r / "single.bin")])
    with open(r / ".dvc" / "config", "a") as f:
        f.write(
            f"[core]\n    remote = store\n['remote \"store\"']\n    url = {r.parent / 'remote'}\n"
        )
    return r


@pytest.fixture
def dvc_repo(dvc_origin, tmp_path, monkeypatch) -> Path:
    """A fresh copy of `dvc_origin` (its remote shared: each test pushes what it needs)."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    r = tmp_path / "dvcrepo"
    shutil.copytree(dvc_origin, r, symlinks=True)
    return r


def test_data_checks_out_from_the_dvc_cache(dvc_repo, tmp_path):
    recorded = data_hashes(dvc_repo, ["data/raw", "single.bin"])
    dest = tmp_path / "out"
    checkout_data(Project(dvc_repo), recorded, dest, run="run-d")
    assert data_hashes(dest, list(recorded)) == recorded
    assert (dest / "data" / "raw" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 4


def test_data_missing_from_the_cache_is_pulled_from_the_remote(dvc_repo, tmp_path):
    recorded = data_hashes(dvc_repo, ["data/raw"])
    from dvc.repo import Repo

    with Repo(str(dvc_repo)) as repo:
        repo.push()
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    dest = tmp_path / "out"
    checkout_data(Project(dvc_repo), recorded, dest, run="run-d")
    assert data_hashes(dest, ["data/raw"]) == recorded


def test_data_nowhere_is_a_clear_error(dvc_repo, tmp_path):
    recorded = data_hashes(dvc_repo, ["data/raw"])
    shutil.rmtree(dvc_repo / ".dvc" / "cache")  # and not on the remote either
    (dvc_repo / ".dvc" / "config").write_text("")
    with pytest.raises(RecreateError) as e:
        checkout_data(Project(dvc_repo), recorded, tmp_path / "out", run="run-d")
    msg = str(e.value)
    assert "run-d" in msg and recorded["data/raw"] in msg
    assert "`dvc push`" in msg and "`dvc pull`" in msg


def test_an_edited_stored_diff_is_not_applied(repo, tmp_path):
    (repo / "train.py").write_text("print('v2')\n")
    record = record_of(repo, "run-edited")
    record["code_patch"]["patch"] = record["code_patch"]["patch"].replace("v2", "v3")
    with pytest.raises(RecreateError, match="the stored diff is not the one recorded"):
        checkout_code(Project(repo), record, tmp_path / "wt")
