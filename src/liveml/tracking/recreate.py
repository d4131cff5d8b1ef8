"""Re-create the parts of a recorded run exactly: its code and its data.

Code: the recorded commit in a temporary `git worktree`, with the uncommitted changes the
record stores (`code_patch`, see `lineage.code_state_and_patch`) applied, then checked: the
worktree's code state must be the recorded one (commit, dirty, diff_sha256). Data: each
recorded DVC hash checked out from the project's DVC cache (fetched from the DVC remote when
the cache lacks it), then hashed again. `liveml explain` trains its cells on these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from liveml.core.project import Project


class RecreateError(RuntimeError):
    """A part of a run cannot be re-created; the message names the run, why and the fix."""


def _git(cwd: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)


def git_top(project: Project) -> tuple[Path, str]:
    """(top folder of the project's git repo, the project's path inside it, '' or 'sub/')."""
    top = _git(project.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RecreateError(
            f"{project.root} is not in a git repository: a run's code can only be re-created "
            "from git; fix: run liveml in the project's git checkout"
        )
    prefix = _git(project.root, "rev-parse", "--show-prefix").stdout.decode().strip()
    return Path(top.stdout.decode().strip()), prefix


def code_problem(record: Mapping) -> str | None:
    """Why the code of `record` cannot be re-created (None when it can)."""
    from liveml.tracking.lineage import commit_problem, patch_bytes

    run = record.get("run_id")
    code = record.get("code") or {}
    commit = code.get("commit")
    if commit is None:
        return f"run {run} was not trained in a git checkout: its code has no commit to re-create"
    if problem := commit_problem(commit):
        return f"run {run}'s {problem}"
    stored = record.get("code_patch")
    if code.get("dirty") and patch_bytes(stored) is None:
        stored = stored if isinstance(stored, Mapping) else {}
        if stored.get("patch") is not None:
            why = "the stored diff is not the one recorded: its record was edited"
        else:
            why = stored.get("omitted") or "recorded before liveml kept diffs"
        return (
            f"run {run} was trained on uncommitted changes that its record does not store "
            f"({why}); fix: commit the changes (and add files that are not code, such as "
            "reports, to .gitignore), then train again"
        )
    return None


def checkout_code(project: Project, record: Mapping, dest: str | os.PathLike) -> Path:
    """A worktree at `dest` holding the code of `record` (commit + stored uncommitted changes);
    returns the project's folder inside it. RecreateError when it cannot be made."""
    from liveml.tracking.lineage import patch_bytes

    if problem := code_problem(record):
        raise RecreateError(problem)
    top, prefix = git_top(project)
    dest = Path(dest).resolve()
    commit = record["code"]["commit"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # `--`: whatever the paths are, git reads them as paths (the commit is checked hex).
    out = _git(top, "worktree", "add", "--detach", "--quiet", "--", str(dest), commit)
    if out.returncode != 0:
        raise RecreateError(
            f"cannot check out commit {commit} of run {record.get('run_id')}: "
            f"{out.stderr.decode().strip()}; fix: fetch that commit into this repository "
            "(`git fetch`), or train the run again"
        )
    stored = record.get("code_patch") or {}
    patch = patch_bytes(stored)
    if record["code"].get("dirty") and patch:
        # Changes to files git tracks go to the index too (as they were: a staged new file or
        # rename is tracked), the untracked files' new-file diffs only to the tree.
        n = stored.get("tracked_bytes")
        n = n if isinstance(n, int) and 0 <= n <= len(patch) else 0
        for part, index in ((patch[:n], ["--index"]), (patch[n:], [])):
            if not part:
                continue
            args = ("apply", *index, "--binary", "--whitespace=nowarn", "-")
            applied = _git(dest, *args, input=part)
            if applied.returncode != 0:
                remove_worktree(project, dest)
                raise RecreateError(
                    f"the stored uncommitted changes of run {record.get('run_id')} do not "
                    f"apply to commit {commit}: {applied.stderr.decode().strip()}"
                )
    return dest / prefix if prefix else dest


def code_matches(record: Mapping, root: str | os.PathLike) -> tuple[dict, bool]:
    """(code state of `root`, whether it is the recorded one: commit, dirty, diff_sha256)."""
    from liveml.tracking.lineage import code_state, code_view, pipeline_outputs

    root = Path(root)
    config = record.get("config") or {}
    exclude = pipeline_outputs(config, Project(root)) if "paths" in config else None
    state = code_state(root, exclude=exclude) if exclude else code_state(root)
    return state, code_view(state) == code_view(record.get("code") or {})


def remove_worktree(project: Project, dest: str | os.PathLike) -> None:
    """Remove a worktree made by `checkout_code` (and git's note of it)."""
    dest = Path(dest)
    try:
        top, _ = git_top(project)
    except RecreateError:
        shutil.rmtree(dest, ignore_errors=True)
        return
    _git(top, "worktree", "remove", "--force", "--", str(dest))
    shutil.rmtree(dest, ignore_errors=True)
    _git(top, "worktree", "prune")


def checkout_data(
    project: Project, data: Mapping[str, str], dest_root: str | os.PathLike, *, run: str = ""
) -> None:
    """Materialise each recorded `{path: DVC hash}` under `dest_root/<path>` from the project's
    DVC cache (pulling the missing objects from the default DVC remote), then check that
    `lineage.data_hashes` gives the recorded hashes. RecreateError names the fix."""
    from dvc_data.hashfile.checkout import checkout
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_objects.fs.local import LocalFileSystem

    from liveml.tracking.lineage import data_hashes

    dest_root = Path(dest_root)
    if not data:
        return
    if not (project.root / ".dvc").is_dir():
        raise RecreateError(
            f"{project.root} is not a DVC repository: the data of run {run} cannot be "
            "re-created from its hash; fix: `dvc init` and track the data with DVC"
        )
    from dvc.repo import Repo

    repo = Repo(str(project.root))
    try:
        odb = repo.cache.local
        for rel, value in data.items():
            info = HashInfo("md5", str(value))
            obj = _cached(odb, info)
            if obj is None:
                _pull(repo, info, rel, run)
                obj = _cached(odb, info)
            if obj is None:
                raise RecreateError(_missing(rel, value, run, "after a pull"))
            dest = dest_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            checkout(str(dest), LocalFileSystem(), obj, odb, force=True, quiet=True)
    finally:
        repo.close()
    got = data_hashes(dest_root, list(data))
    wrong = [f"{p}: {got.get(p)} instead of {h}" for p, h in data.items() if got.get(p) != h]
    if wrong:
        raise RecreateError(f"the data of run {run} did not check out as recorded: {wrong}")


def _cached(odb, info):
    """The object (file or tree) of `info` when it and all its files are in `odb`, else None."""
    from dvc_data.hashfile import check, load

    try:
        obj = load(odb, info)
        check(odb, obj)
    except Exception:  # missing .dir or file objects, a corrupted one: not usable from here
        return None
    return obj


def _pull(repo, info, rel: str, run: str) -> None:
    """Fetch the objects of `info` from the default DVC remote into the local cache."""
    try:
        repo.cloud.pull([info])
        if info.isdir:  # the pull brings the tree object; then the files it lists
            from dvc_data.hashfile.tree import Tree

            tree = Tree.load(repo.cache.local, info)
            repo.cloud.pull([entry for _, _, entry in tree])
    except Exception as e:  # no remote configured, remote unreachable, objects not there
        raise RecreateError(
            _missing(rel, info.value, run, f"and the DVC remote cannot give it ({e})")
        ) from e


def _missing(rel: str, value: str, run: str, how: str) -> str:
    return (
        f"the data of run {run} ({rel}, DVC hash {value}) is not in this project's DVC cache "
        f"{how}; fix: `dvc push` it from the machine that trained the run, then `dvc pull` "
        "(or `dvc fetch`) here"
    )
