"""Lineage of a run: code state, data hashes, environment, fingerprint, and the run record.

A trained model is a function of (code, fingerprint view of the config, data); the fingerprint
hashes exactly those three, so the same fingerprint means the same run (checkpoints are resumed
only within one fingerprint) and a reproduction can tell what changed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from liveml.core.project import Project

# Files the pipeline itself writes into the git tree. They derive from conf/ and data (both
# recorded on their own), so they are not part of the code state: otherwise running
# `liveml params` or a DVC stage would make the code look edited.
PIPELINE_WRITTEN = ("dvc.lock", "params.yaml")

# Packages whose versions decide the numbers a training run computes.
ENV_PACKAGES = ("torch", "torchvision", "torchaudio", "lightning", "numpy")

# A commit as run records hold it: a full or abbreviated SHA-1/SHA-256 object name. Anything
# else in a record (e.g. `--output=/path`) must never reach git, where it would be an option.
COMMIT_RE = re.compile(r"[0-9a-fA-F]{7,64}")

# The most bytes of uncommitted changes a run record stores (`code_patch`): enough for edits
# of source files, not for a dataset or a model left untracked in the tree.
PATCH_MAX_BYTES = 1 << 20

# What a code state is, and all that the fingerprint hashes of it.
CODE_KEYS = ("commit", "dirty", "diff_sha256")


def is_commit(value: Any) -> bool:
    """Whether `value` is a commit hash (7-64 hex digits), safe to pass to git as a revision."""
    return isinstance(value, str) and COMMIT_RE.fullmatch(value) is not None


def commit_problem(value: Any) -> str | None:
    """Why a recorded `code.commit` cannot be used with git (None when it can, or is absent)."""
    if value is None or is_commit(value):
        return None
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f"code.commit {shown} is not a valid commit hash (7-64 hex digits)"


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, so equal values hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)


def code_state(root: str | os.PathLike, exclude: Iterable[str] = PIPELINE_WRITTEN) -> dict:
    """Git HEAD, whether the worktree differs from it, and a hash of that difference.

    `dirty` counts tracked changes (staged or not) and untracked files that git does not ignore;
    `diff_sha256` hashes `git diff HEAD` plus the untracked files' paths and contents (None when
    clean). Paths in `exclude` (relative to `root`) are left out. Outside git: all None.
    """
    return code_state_and_patch(root, exclude, patch=False)[0]


def code_state_and_patch(
    root: str | os.PathLike, exclude: Iterable[str] = PIPELINE_WRITTEN, *, patch: bool = True
) -> tuple[dict, dict | None]:
    """`code_state` plus, for a dirty tree, the difference itself (`code_patch`), from one look
    at the tree: a patch that `git apply --binary` on a clean checkout of the commit turns
    into the same tree (the same `diff_sha256`). None when clean or outside git."""
    root = Path(root).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return {"commit": None, "dirty": None, "diff_sha256": None}, None
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None

    # Pathspecs are relative to the cwd (root); excluded paths that do not exist are harmless,
    # paths outside the repo would be an error, and they cannot be in the diff anyway.
    spec = ["--", ".", *(f":(exclude){p}" for p in _inside(root, exclude))]
    # Without a first commit there is no HEAD to diff against: the index is the change.
    base = ["diff", "HEAD"] if commit else ["diff", "--cached"]
    diff = _git(root, *base, "--binary", "--no-ext-diff", "--no-color", *spec)
    if diff.returncode != 0:
        raise RuntimeError(f"git diff failed in {root}: {diff.stderr.decode().strip()}")
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard", *spec)
    files = sorted(f for f in untracked.stdout.decode().split("\0") if f)

    if not diff.stdout and not files:
        return {"commit": commit, "dirty": False, "diff_sha256": None}, None
    h = hashlib.sha256(diff.stdout)
    for rel in files:
        p = root / rel
        h.update(b"\0untracked\0" + rel.encode() + b"\0")
        # A file can vanish between listing and reading (another process); hash what is there.
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    state = {"commit": commit, "dirty": True, "diff_sha256": h.hexdigest()}
    if not patch:
        return state, None
    return state, _patch(root, diff.stdout, files)


def _patch(root: Path, diff: bytes, untracked: list[str]) -> dict:
    """The `code_patch` of a dirty tree: the tracked diff plus a new-file diff per untracked
    file, as text (or base64 when not UTF-8); over PATCH_MAX_BYTES only why it was left out."""
    sizes = {"tracked files (git diff HEAD)": len(diff)} if diff else {}
    for rel in untracked:
        with contextlib.suppress(OSError):
            sizes[rel] = (root / rel).stat().st_size
    if sum(sizes.values()) > PATCH_MAX_BYTES:  # before running git per file: far too big anyway
        return _omitted(sum(sizes.values()), sizes)
    # The tracked diff names paths from the top of the git repo; so must the new-file diffs.
    prefix = _git(root, "rev-parse", "--show-prefix").stdout.decode().strip()
    top = Path(_git(root, "rev-parse", "--show-toplevel").stdout.decode().strip())
    parts = [diff]
    for rel in untracked:
        # Exit status 1 means "they differ", which a new file always does.
        out = _git(
            top,
            "diff",
            "--no-index",
            "--binary",
            "--no-ext-diff",
            "--no-color",
            "--",
            "/dev/null",
            prefix + rel,
        )
        if out.returncode not in (0, 1):
            raise RuntimeError(f"git diff of the untracked {rel} failed: {out.stderr.decode()}")
        parts.append(out.stdout)
    data = b"".join(parts)
    if len(data) > PATCH_MAX_BYTES:
        return _omitted(len(data), sizes)
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return {
        "patch": text,
        "encoding": encoding,
        "bytes": len(data),
        # The first `tracked_bytes` bytes are `git diff HEAD` (files in the index: re-created
        # with `git apply --index`), the rest new-file diffs of the untracked files.
        "tracked_bytes": len(diff),
        "sha256": hashlib.sha256(data).hexdigest(),
        "omitted": None,
    }


def _omitted(size: int, sizes: Mapping[str, int]) -> dict:
    """Why no patch was stored, naming the biggest parts: often a report or a data file that
    was never meant to be code and belongs in .gitignore."""
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    named = ", ".join(f"{rel} {n} bytes" for rel, n in largest)
    return {
        "patch": None,
        "encoding": None,
        "bytes": size,
        "tracked_bytes": None,
        "sha256": None,
        "omitted": f"the uncommitted changes are {size} bytes, over the {PATCH_MAX_BYTES}-byte "
        f"bound (PATCH_MAX_BYTES) for storing them in the run record; the largest: {named}",
    }


def patch_bytes(code_patch: Mapping | None) -> bytes | None:
    """The stored patch of a record's `code_patch` as bytes: None when none is stored, or when
    what is stored is not what was recorded (bad base64, another sha256: an edited record)."""
    if not isinstance(code_patch, Mapping) or not isinstance(code_patch.get("patch"), str):
        return None
    text = code_patch["patch"]
    try:
        if code_patch.get("encoding") == "base64":
            data = base64.b64decode(text, validate=True)
        else:
            data = text.encode("utf-8")
    except ValueError:  # binascii.Error, UnicodeEncodeError (a lone surrogate)
        return None
    recorded = code_patch.get("sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        return None
    return data


def _inside(root: Path, paths: Iterable[str]) -> list[str]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_absolute():
            if not p.resolve().is_relative_to(root):
                continue
            p = p.resolve().relative_to(root)
        out.append(p.as_posix())
    return out


def data_hashes(root: str | os.PathLike, paths: Iterable[str]) -> dict[str, str]:
    """The hash DVC records in dvc.lock for each path: md5 of a file, `<md5>.dir` of a folder.

    Computed with DVC's own hashing (dvc_data's `build`, honouring .dvcignore like `dvc add`),
    so a run record can be compared with dvc.lock and .dvc files directly. In a DVC repo the
    per-file md5s come from DVC's own hash cache (its state database, keyed by inode, mtime and
    size, which `dvc add`/`dvc repro`/`dvc status` fill): an unchanged file is not read again,
    and the files hashed here are added to that cache for DVC to reuse.
    """
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    root = Path(root).resolve()
    fs = LocalFileSystem()
    ignore = _dvcignore(fs, root)
    state = dvc_state(root, ignore)
    # dry_run: hash only; the tree object goes to an in-memory staging area we drop afterwards.
    odb = HashFileDB(MemoryFileSystem(), f"memory://liveml-hash-{os.getpid()}", state=state)
    out: dict[str, str] = {}
    try:
        for rel in paths:
            path = root / rel
            if not path.exists():
                raise FileNotFoundError(
                    f"data path {rel!r} does not exist under {root}; fix: `dvc pull` or "
                    "`dvc repro generate` to create it."
                )
            staging, _, obj = build(odb, str(path), fs, "md5", dry_run=True, ignore=ignore)
            out[str(rel)] = obj.hash_info.value
            # The global memory filesystem would keep these blobs for the life of the process.
            if staging.fs.exists(staging.path):
                staging.fs.rm(staging.path, recursive=True)
            if obj.path and obj.fs.protocol == "memory" and obj.fs.exists(obj.path):
                obj.fs.rm_file(obj.path)
    finally:
        if state is not None:
            state.close()
    return out


def dvc_state(root: Path, ignore=None):
    """DVC's hash cache (dvc_data State) of the DVC repo at `root`, the one `dvc` itself opens
    there, or None (not a DVC repo, or the cache cannot be opened: then files are hashed)."""
    if not (root / ".dvc").is_dir():
        return None
    try:
        from dvc_data.hashfile.state import State

        return State(str(root), dvc_site_cache_dir(root), ignore)
    except Exception:  # an unwritable cache folder, a DVC that moved it: hash the files
        return None


def dvc_site_cache_dir(root: Path) -> str:
    """Where DVC keeps the repo's state (`Repo.site_cache_dir`), computed as DVC does without
    opening the repo (which costs most of a second): `core.site_cache_dir` from the DVC config
    (system, global, repo, local) or DVC's default, then `repo/<md5 of root, .dvc/tmp/btime's
    mtime, user and DVC's major version>`. tests/tracking/test_lineage.py checks it against
    DVC's own."""
    import getpass

    from dvc.dirs import global_config_dir, site_cache_dir, system_config_dir
    from dvc.version import version_tuple

    configured = None
    for config in (
        Path(system_config_dir()) / "config",
        Path(global_config_dir()) / "config",
        root / ".dvc" / "config",
        root / ".dvc" / "config.local",
    ):
        configured = _dvc_core_option(config, "site_cache_dir") or configured
    # DVC's stand-in for the repo's creation time: the mtime of .dvc/tmp/btime, made on first use.
    btime_file = root / ".dvc" / "tmp" / "btime"
    try:
        with open(btime_file, "x"):
            pass
    except FileExistsError:
        pass
    except FileNotFoundError:
        btime_file = None
    btime = os.path.getmtime(btime_file) if btime_file else None
    token = hashlib.md5(
        str((str(root), None, btime, getpass.getuser(), version_tuple[0], 0)).encode(),
        usedforsecurity=False,
    ).hexdigest()
    return os.path.join(site_cache_dir(configured), "repo", token)


def _dvc_core_option(path: Path, key: str) -> str | None:
    """`key` of the `[core]` section of a DVC config file (INI), or None."""
    import configparser

    if not path.is_file():
        return None
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read(path)
    except configparser.Error:
        return None
    return parser.get("core", key, fallback=None)


def _dvcignore(fs, root: Path):
    """DVC's .dvcignore filter of the repo at `root` (None outside a DVC repo)."""
    if not (root / ".dvc").is_dir():
        return None
    from dvc.ignore import DvcIgnoreFilter

    return DvcIgnoreFilter(fs, str(root))


def environment(root: str | os.PathLike) -> dict:
    """Python, platform, the numeric packages' versions and the lock file's hash."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ENV_PACKAGES:
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    lock = Project(Path(root)).lock_file
    env["lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None
    return env


def code_view(code: Mapping) -> dict:
    """The keys of a code state that the fingerprint hashes (CODE_KEYS; any other key, such
    as a patch someone put there, is left out, so it never changes a fingerprint)."""
    return {k: code[k] for k in CODE_KEYS if k in code}


def fingerprint(code: Mapping, config_view: Mapping, data: Mapping) -> str:
    """sha256 of the canonical JSON of (code, config view, data): what decides the weights."""
    payload = {"code": code_view(code), "config": dict(config_view), "data": dict(data)}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def fingerprint_parts(code: Mapping, config_view: Mapping, data: Mapping) -> dict[str, str]:
    """sha256 of each of the fingerprint's three inputs: which of code, hyperparameters and
    data two runs differ in, at a glance (W&B groups and compares by these)."""
    return {
        "code": hashlib.sha256(canonical_json(code_view(code))).hexdigest(),
        "config": hashlib.sha256(canonical_json(dict(config_view))).hexdigest(),
        "data": hashlib.sha256(canonical_json(dict(data))).hexdigest(),
    }


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 over sorted keys, dtype, shape and raw bytes: equal iff the tensors are equal."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            head = {"key": key, "dtype": str(t.dtype), "shape": list(t.shape)}
            # Viewing as bytes works for every dtype (numpy has no bfloat16).
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        else:
            head = {"key": key, "value": repr(value)}
            raw = b""
        # Length-prefixed parts: no two different state dicts give the same byte stream.
        for part in (canonical_json(head), raw):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def pipeline_outputs(cfg, project: Project | None = None) -> list[str]:
    """Files and folders under the project that the pipeline writes (not code): those of `cfg`
    and, with `project`, those of every task in its params.yaml, since one task's outputs
    (e.g. metrics/<task>.json) change while `dvc repro` goes on to train another task."""
    configs = [cfg]
    if project is not None and project.params_file.is_file():
        import yaml

        params = yaml.safe_load(project.params_file.read_text()) or {}
        tasks = params.get("tasks")
        configs += list(tasks.values()) if isinstance(tasks, Mapping) else []
    keys = (
        "data",
        "recipes",
        "data_report",
        "model",
        "checkpoints",
        "metrics",
        "plots",
        "export",
        "runs",
    )
    out = list(PIPELINE_WRITTEN)
    for c in configs:
        paths = c["paths"] if isinstance(c, Mapping) else c.paths
        out += [str(paths[k]) for k in keys if k in paths and str(paths[k]) not in out]
    return out


def new_run_id(fp: str, now: float | None = None) -> str:
    """Time-sortable (UTC) id plus the fingerprint prefix, e.g. `20261124-153012-ab12cd34`."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + fp[:8]


def new_record(cfg, project: Project, data_paths: Iterable[str]) -> dict:
    """The run record of docs/architecture.md, before training (no metrics or weights yet)."""
    from liveml.core.config import fingerprint_view, to_dict

    config = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    code, patch = code_state_and_patch(project.root, exclude=pipeline_outputs(config, project))
    data = data_hashes(project.root, data_paths)
    view = fingerprint_view(config)
    fp = fingerprint(code, view, data)
    now = time.time()
    return {
        "run_id": new_run_id(fp, now),
        "task": config["task"]["name"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "fingerprint": fp,
        "fingerprint_parts": fingerprint_parts(code, view, data),
        "code": code,
        # The uncommitted changes themselves (None when clean), outside `code` so that the
        # fingerprint, W&B's config, the compare table and its index keep only the hash.
        "code_patch": patch,
        "config": config,
        "data": data,
        "environment": environment(project.root),
        "seed": config.get("seed"),
        "metrics": {},
        "weights_sha256": None,
        "wandb": None,
    }
