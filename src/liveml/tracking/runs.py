"""Local run store: one folder per run, `runs/<run_id>/run.json` plus files such as metrics.csv.

Each save builds its folder under a temp name and renames it into place, so concurrent
writers (sweeps, parallel stages) never see or leave a half-written run. The temp name is
`.<run_id>.<pid>-<random>.tmp`, the pattern of liveml.core.atomic: a writer killed midway leaves
it behind, and the first write of a later process into the store removes it once it is a minute
old and its process is gone (`RunStore.clean_temps`). Runs made elsewhere come in through
liveml.tracking.transfer (export/import of bundles and other stores).

Reading is defensive: a record that is not valid JSON, not an object, or has fields of the
wrong type (a hand edit, a torn copy, a hostile file) is skipped with one warning line naming
the file and the problem, so one bad run never breaks `liveml runs` or `liveml compare`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from liveml.core.atomic import (
    STALE_AFTER_S,
    clean_stale_temps,
    make_public,
    temp_dir_for,
)
from liveml.core.project import Project

RECORD = "run.json"
DEFAULT_RUNS = "runs"


class RunNotFoundError(LookupError):
    """No run matches a reference; the message says what was tried and how to list runs."""


class BadRecordError(RunNotFoundError, ValueError):
    """A run.json that exists but cannot be used (not JSON, not an object, fields of the wrong
    type); the message names the file and the problem. A RunNotFoundError, so callers that
    report unknown runs in one line (the CLI) report this one the same way."""

    def __init__(self, path: str | os.PathLike, problem: str | None = None):
        # BadRecordError("<path>: <problem>") works too (the message as one string).
        super().__init__(str(path) if problem is None else f"{path}: {problem}")
        self.path = None if problem is None else Path(path)
        self.problem = problem


# The fields readers use, and the JSON types each may have when present (None: null).
_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "task": (str, type(None)),
    "kind": (str, type(None)),
    "created": (str, type(None)),
    "fingerprint": (str,),
    "status": (str, type(None)),
    "weights_sha256": (str, type(None)),
    "metrics": (dict, type(None)),
    "code": (dict, type(None)),
    "config": (dict, type(None)),
    "data": (dict, type(None)),
    "environment": (dict, type(None)),
    "fingerprint_parts": (dict, type(None)),
    "resumed_from": (dict, type(None)),
    "wandb": (dict, type(None)),
    "retrain": (dict, type(None)),
    "sweep": (dict, str, type(None)),
    "epochs": (int, type(None)),
    "global_step": (int, type(None)),
    "train_seconds": (*_NUMBER, type(None)),
}
_CODE_TYPES: dict[str, tuple[type, ...]] = {
    "commit": (str, type(None)),
    "dirty": (bool, type(None)),
    "diff_sha256": (str, type(None)),
}
_SWEEP_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str, type(None)),
    "kind": (str, type(None)),
    "job": (int, type(None)),
    "experiment": (str, type(None)),
    "overrides": (dict, type(None)),
}
_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def record_problem(record: Any) -> str | None:
    """What is wrong with a parsed run record (None when readers can use it): not an object,
    no `run_id`, or a field of the wrong type (metrics must be numbers)."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_json_name(record)}"
    if not record.get("run_id"):
        return "no run_id"
    sweep = record.get("sweep")
    for fields, obj, prefix in (
        (_FIELD_TYPES, record, ""),
        (_CODE_TYPES, record.get("code") or {}, "code."),
        (_SWEEP_TYPES, sweep if isinstance(sweep, dict) else {}, "sweep."),
    ):
        for key, types in fields.items():
            if key in obj and not _is(obj[key], types):
                want = " or ".join(_JSON_NAMES[t] for t in types)
                return f"{prefix}{key} is {_json_name(obj[key])}, expected {want}"
    for key, value in (record.get("metrics") or {}).items():
        if not _is(value, _NUMBER):
            return f"metric {key!r} is {_json_name(value)}, expected a number"
    return None


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # JSON true/false are Python bools, which are ints: a bool is only a bool here.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _json_name(value: Any) -> str:
    return next((n for t, n in _JSON_NAMES.items() if type(value) is t), type(value).__name__)


def read_record(path: str | os.PathLike) -> dict:
    """The run record in `path`, checked; BadRecordError names the file and what is wrong."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise BadRecordError(path, f"not valid JSON ({e})") from e
    except RecursionError as e:
        raise BadRecordError(path, "not valid JSON (nested too deeply)") from e
    except OSError as e:
        raise BadRecordError(path, f"cannot be read ({e.strerror or e})") from e
    problem = record_problem(record)
    if problem:
        raise BadRecordError(path, problem)
    return record


def warn_bad_record(error: BadRecordError) -> None:
    """The default for skipped records: one line on stderr naming the file and the problem."""
    print(f"liveml: warning: skipping run record {error}", file=sys.stderr, flush=True)


class RunStore:
    """The runs folder of a project (`paths.runs`). Its SQLite index (`runs/.index/`, see
    liveml.tracking.index) is a cache that `save` keeps current and readers rebuild."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def for_project(cls, project: Project, cfg=None) -> RunStore:
        """The store at `cfg.paths.runs`, else params.yaml's `paths.runs`, else `runs/` (under
        the project's `home`: queued DVC experiments save into the repo they came from)."""
        rel = None
        if cfg is not None:
            paths = cfg["paths"] if isinstance(cfg, Mapping) else cfg.paths
            rel = paths.get("runs")
        elif project.params_file.is_file():
            import yaml

            params = yaml.safe_load(project.params_file.read_text()) or {}
            rel = (params.get("paths") or {}).get("runs")
        return cls(project.home_path(rel or DEFAULT_RUNS))

    def save(self, record: dict, files: Mapping[str, str | os.PathLike] | None = None) -> Path:
        """Write `runs/<run_id>/` with run.json and copies of `files` ({name: source path}),
        then add it to the store's index (when there is one).

        A run id already taken (same second, same fingerprint) gets a `-2`, `-3`... suffix; the
        id is updated in `record`. Returns the run's folder.
        """
        base = record["run_id"]
        tmp = temp_dir_for(self.path / base)  # also cleans temps of killed writers
        try:
            make_public(tmp, 0o777)
            for name, src in (files or {}).items():
                shutil.copyfile(src, tmp / name)
                _fsync(tmp / name)
            for n in range(1, 1000):
                run_id = base if n == 1 else f"{base}-{n}"
                record["run_id"] = run_id
                data = _write_json(tmp / RECORD, record)
                dest = self.path / run_id
                if dest.exists():
                    continue
                try:
                    # rename(2) onto an existing non-empty folder fails: a race loser retries.
                    os.rename(tmp, dest)
                except OSError:
                    if dest.exists():
                        continue
                    raise
                break
            else:
                raise RuntimeError(f"cannot find a free run id for {base} in {self.path}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        from liveml.tracking.index import add_published

        add_published(self.path, dest, data)
        return dest

    def clean_temps(self, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove the temp folders that killed writers (saves, imports) left in the store: those
        older than `older_than_s` whose process is gone. Returns what was removed."""
        return clean_stale_temps(self.path, older_than_s=older_than_s)

    def ids(self) -> list[str]:
        """Run ids in the store, oldest first (ids start with a UTC timestamp)."""
        if not self.path.is_dir():
            return []
        return sorted(
            d.name
            for d in self.path.iterdir()
            if not d.name.startswith(".") and (d / RECORD).is_file()
        )

    def records(
        self, on_bad: Callable[[BadRecordError], None] | None = warn_bad_record
    ) -> list[tuple[Path, dict]]:
        """(run.json path, record) of every usable run, oldest first. A bad record is skipped
        and passed to `on_bad` (default: a warning line on stderr; None: skipped silently)."""
        out = []
        for i in self.ids():
            path = self.path / i / RECORD
            try:
                out.append((path, read_record(path)))
            except BadRecordError as e:
                if on_bad is not None:
                    on_bad(e)
        return out

    def list(self, on_bad: Callable[[BadRecordError], None] | None = warn_bad_record) -> list[dict]:
        """All usable run records, oldest first; bad ones are skipped (see `records`)."""
        return [record for _, record in self.records(on_bad)]

    def resolve(self, ref: str | os.PathLike) -> Path:
        """The run.json that `ref` names: a path to run.json, a folder holding one (a model
        folder or a run folder), a run id, or a unique prefix of a run id (looked up in the
        store's index when it has one, else in a listing of the folder)."""
        tried = []
        p = Path(ref)
        if p.is_file():
            return p
        if (p / RECORD).is_file():
            return p / RECORD
        tried.append(f"path {p} (no such file, or a folder without {RECORD})")
        ref = str(ref)
        plain = ref and not ref.startswith(".") and "/" not in ref and os.sep not in ref
        if plain and (self.path / ref / RECORD).is_file():
            return self.path / ref / RECORD
        ids, total = self._prefixed(ref) if plain else ([], None)
        if total is None:
            all_ids = self.ids()
            ids, total = [i for i in all_ids if i.startswith(ref)], len(all_ids)
        if ref in ids:
            return self.path / ref / RECORD
        if len(ids) == 1:
            return self.path / ids[0] / RECORD
        if len(ids) > 1:
            shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            raise RunNotFoundError(
                f"run {ref!r} is ambiguous: {len(ids)} runs in {self.path} start with it "
                f"({shown}); give more of the id."
            )
        tried.append(f"run id or id prefix in {self.path} ({total} runs)")
        raise RunNotFoundError(
            f"no run matches {ref!r}; tried: {'; '.join(tried)}. "
            "List runs with `liveml runs`, or pass a model folder or a run.json path."
        )

    def _prefixed(self, prefix: str) -> tuple[list[str], int | None]:
        """(ids starting with `prefix`, how many runs) from the index; total None when the
        store has no usable index."""
        from liveml.tracking.index import open_quiet

        index = open_quiet(self.path)
        if index is None:
            return [], None
        try:
            with index.snapshot():
                return index.folders(prefix), len(index.folders())
        finally:
            index.close()

    def get(self, ref: str | os.PathLike) -> dict:
        """The run record that `ref` names (see `resolve`); BadRecordError when it is unusable."""
        return read_record(self.resolve(ref))


def _write_json(path: Path, obj) -> bytes:
    data = (json.dumps(obj, indent=2, default=str) + "\n").encode()
    path.write_bytes(data)
    _fsync(path)
    return data


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
