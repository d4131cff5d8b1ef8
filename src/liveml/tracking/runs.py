"""Local run store: one folder per run, `runs/<run_id>/run.json` plus files such as metrics.csv.

Each save builds its folder under a temp name and renames it into place, so concurrent
writers (sweeps, parallel stages) never see or leave a half-written run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from liveml.core.atomic import make_public
from liveml.core.project import Project

RECORD = "run.json"
DEFAULT_RUNS = "runs"


class RunNotFoundError(LookupError):
    """No run matches a reference; the message says what was tried and how to list runs."""


class RunStore:
    """The runs folder of a project (`paths.runs`)."""

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
        """Write `runs/<run_id>/` with run.json and copies of `files` ({name: source path}).

        A run id already taken (same second, same fingerprint) gets a `-2`, `-3`... suffix; the
        id is updated in `record`. Returns the run's folder.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        base = record["run_id"]
        tmp = Path(tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=self.path))
        try:
            make_public(tmp, 0o777)
            for name, src in (files or {}).items():
                shutil.copyfile(src, tmp / name)
                _fsync(tmp / name)
            for n in range(1, 1000):
                run_id = base if n == 1 else f"{base}-{n}"
                record["run_id"] = run_id
                _write_json(tmp / RECORD, record)
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
                return dest
            raise RuntimeError(f"cannot find a free run id for {base} in {self.path}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def ids(self) -> list[str]:
        """Run ids in the store, oldest first (ids start with a UTC timestamp)."""
        if not self.path.is_dir():
            return []
        return sorted(
            d.name
            for d in self.path.iterdir()
            if not d.name.startswith(".") and (d / RECORD).is_file()
        )

    def list(self) -> list[dict]:
        """All run records, oldest first."""
        return [_read_json(self.path / i / RECORD) for i in self.ids()]

    def resolve(self, ref: str | os.PathLike) -> Path:
        """The run.json that `ref` names: a path to run.json, a folder holding one (a model
        folder or a run folder), a run id, or a unique prefix of a run id."""
        tried = []
        p = Path(ref)
        if p.is_file():
            return p
        if (p / RECORD).is_file():
            return p / RECORD
        tried.append(f"path {p} (no such file, or a folder without {RECORD})")
        ref = str(ref)
        ids = self.ids()
        if ref in ids:
            return self.path / ref / RECORD
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return self.path / matches[0] / RECORD
        if len(matches) > 1:
            shown = ", ".join(matches[:10]) + (" ..." if len(matches) > 10 else "")
            raise RunNotFoundError(
                f"run {ref!r} is ambiguous: {len(matches)} runs in {self.path} start with it "
                f"({shown}); give more of the id."
            )
        tried.append(f"run id or id prefix in {self.path} ({len(ids)} runs)")
        raise RunNotFoundError(
            f"no run matches {ref!r}; tried: {'; '.join(tried)}. "
            "List runs with `liveml runs`, or pass a model folder or a run.json path."
        )

    def get(self, ref: str | os.PathLike) -> dict:
        """The run record that `ref` names (see `resolve`)."""
        return _read_json(self.resolve(ref))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    _fsync(path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
