"""Stores that travel: bring runs made elsewhere (a cluster, a teammate, a DVC experiment run on
another machine) into a run store, with their metric logs and W&B offline run folders.

- `export_store(store, dest)` writes a *bundle*: a folder laid out like a run store
  (`<run_id>/run.json`, the run's files such as metrics.csv and config.yaml, and its W&B offline
  run folder under `<run_id>/wandb/<name>/`) plus a `liveml-bundle.json` manifest. A `dest`
  ending in `.tar.gz` or `.tgz` gets the same folder packed into one file.
- `import_store(store, source)` takes a bundle (folder or .tar.gz), another project's run store
  folder as it is (a cluster's rsynced `runs/`), a project folder holding one, or a run folder.

Records travel in a portable form (`portable_record`): absolute paths (and file/SQLite URIs)
that point inside the project the run was made in (its W&B folder, the checkpoint it resumed
from, its MLflow store) become relative to that project, and `wandb.dir` becomes `wandb/<name>`,
relative to the run's own folder, where the W&B folder now is. The lineage (config, data, code,
fingerprint, sweep) is kept verbatim, so DVC-experiment and Hydra-sweep records keep their sweep
and `liveml reproduce` still works. (An MLflow run's data stays in MLflow's store: move it with
MLflow's tools; the record keeps its MLflow run id.)

Importing is idempotent. A run already in the store with the same portable record adds nothing
(only files it lacks, such as a W&B folder that arrived later). A run with the same id and a
different record, or a different metric log, is a conflict: any conflict refuses the whole
import before anything is written, listing them all, unless `skip_conflicts` (then the other
runs are imported and the conflicts reported). Each new run is published like `RunStore.save`
does it (built under a temp name that a later writer cleans if this one is killed, renamed into
place, added to the index), so readers never see half a run and `liveml compare` sees it at
once. Bad records in the source are skipped and named, never fatal.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from liveml.core.atomic import atomic_dir, atomic_path, make_public, sweep_once, temp_dir_for
from liveml.tracking.runs import (
    RECORD,
    BadRecordError,
    RunNotFoundError,
    RunStore,
    _fsync,
    _write_json,
    read_record,
    warn_bad_record,
)

MANIFEST = "liveml-bundle.json"
BUNDLE_FORMAT = "liveml-runs"
BUNDLE_VERSION = 1
# A run's W&B offline run folder travels as `<run folder>/wandb/<its name>`.
WANDB = "wandb"
TAR_SUFFIXES = (".tar.gz", ".tgz")
SQLITE = "sqlite:///"
# A run id names a folder of the store: nothing that could leave it or hide in it.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# What W&B names its run folders (`offline-run-<time>-<id>`, `run-<time>-<id>`): a record's
# `wandb.dir` is only looked for when it names one of those.
WANDB_RUN = re.compile(r"(offline-)?run-[A-Za-z0-9._-]+")
# Record fields kept verbatim: what the run was made from, and how it is grouped.
VERBATIM = (
    "run_id",
    "fingerprint",
    "fingerprint_parts",
    "code",
    "code_patch",
    "config",
    "data",
    "sweep",
)


class TransferError(ValueError):
    """A source or destination that cannot be used (not a store, a bundle of a newer liveml,
    an unreadable archive); the message names it and the fix."""


@dataclass
class Conflict:
    """A run of the source whose id is taken in the store by a different run."""

    run_id: str
    source: str  # the incoming run.json (in an archive: `ARCHIVE:<run_id>/run.json`)
    dest: str  # the run.json it conflicts with
    differs: list[str]  # the record fields (or files) that differ

    def __str__(self) -> str:
        differs = ", ".join(self.differs)
        return f"run {self.run_id}: {self.source} differs from {self.dest} in {differs}"


FIX = (
    "fix: if both are the same run, keep the one you trust (delete the other's run folder) and "
    "import again; if they are different runs, import them into another store; or import the "
    "other runs with --skip-conflicts (Python: skip_conflicts=True)"
)


class ImportConflictError(TransferError):
    """Runs of the source conflict with runs in the store; nothing was written."""

    def __init__(self, conflicts: list[Conflict], source: str, store: Path):
        self.conflicts = conflicts
        listed = "; ".join(str(c) for c in conflicts)
        super().__init__(
            f"{len(conflicts)} run(s) of {source} have the id of a different run in {store}, "
            f"so nothing was imported: {listed}. {FIX}"
        )


@dataclass
class TransferResult:
    """What an import or export did: run ids added, already there (identical), completed
    (already there, with files they lacked added), conflicts, skipped sources and warnings."""

    source: str
    store: str
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "store": self.store,
            "added": self.added,
            "present": self.present,
            "completed": self.completed,
            "conflicts": [
                {"run_id": c.run_id, "source": c.source, "dest": c.dest, "differs": c.differs}
                for c in self.conflicts
            ],
            "skipped": [{"path": p, "problem": why} for p, why in self.skipped],
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        """One line: what came in and what did not."""
        parts = [f"{len(self.added)} run(s) added to {self.store} from {self.source}"]
        if self.present:
            done = f" ({len(self.completed)} completed with files they lacked)"
            parts.append(f"{len(self.present)} already there{done * bool(self.completed)}")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflicting run(s) left out")
        if self.skipped:
            parts.append(f"{len(self.skipped)} unusable source(s) skipped")
        return "; ".join(parts)


# --- portable records ---------------------------------------------------------------------


def portable_record(record: dict, store_dir: str | os.PathLike | None = None) -> dict:
    """`record` as it travels: absolute paths inside the project it was made in made relative
    to that project, `wandb.dir` made `wandb/<name>` (relative to the run folder); the lineage
    fields (VERBATIM) untouched. `store_dir`: where the record's store is now (a root too)."""
    roots = sorted(set(_project_roots(record, store_dir)), key=len, reverse=True)
    out = {k: v if k in VERBATIM else _relative(v, roots) for k, v in record.items()}
    wandb = out.get("wandb")
    if isinstance(wandb, dict) and isinstance(wandb.get("dir"), str) and wandb["dir"].strip():
        out["wandb"] = {**wandb, "dir": f"{WANDB}/{_basename(wandb['dir'])}"}
    return out


def wandb_folder(run_folder: str | os.PathLike, record: dict) -> Path | None:
    """The W&B run folder of the run in `run_folder`: `wandb.dir` when absolute, else relative
    to the run folder (where imports put it); None when the run has none."""
    wandb = record.get("wandb")
    d = wandb.get("dir") if isinstance(wandb, dict) else None
    if not isinstance(d, str) or not d.strip():
        return None
    return Path(d) if os.path.isabs(d) else Path(run_folder) / d


def _basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _project_roots(record: dict, store_dir: str | os.PathLike | None) -> list[str]:
    """Where the project of `record` was (or is): inferred from its W&B folder
    (`<root>/<logger.dir>/wandb/<run>`), its resumed checkpoint
    (`<root>/<paths.checkpoints>/<fingerprint>/<file>`) and the store's location
    (`<root>/<paths.runs>`)."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    logger = config.get("logger") if isinstance(config.get("logger"), dict) else {}
    paths = config.get("paths") if isinstance(config.get("paths"), dict) else {}
    roots = []
    wandb = record.get("wandb")
    if isinstance(wandb, dict):
        roots.append(_strip(wandb.get("dir"), logger.get("dir"), 2))
    resumed = record.get("resumed_from")
    if isinstance(resumed, dict):
        roots.append(_strip(resumed.get("path"), paths.get("checkpoints"), 2))
    mlflow = record.get("mlflow")
    if isinstance(mlflow, dict):  # `sqlite:///<root>/<db>` of `logger.dir: sqlite:///<db>`
        uri, configured = mlflow.get("tracking_uri"), logger.get("dir")
        if (
            isinstance(uri, str)
            and isinstance(configured, str)
            and uri.startswith(SQLITE)
            and configured.startswith(SQLITE)
        ):
            roots.append(_strip(uri[len(SQLITE) :], configured[len(SQLITE) :], 0))
    if store_dir is not None:
        roots.append(_strip(os.path.abspath(store_dir), paths.get("runs") or "runs", 0))
    return [r for r in roots if r]


def _strip(path: Any, rel: Any, extra: int) -> str | None:
    """The root `path` is under as `<root>/<rel>/<extra more parts>`; None when it is not."""
    if not (isinstance(path, str) and isinstance(rel, str) and os.path.isabs(path) and rel):
        return None
    if os.path.isabs(rel):
        return None
    parts = PurePosixPath(path.replace("\\", "/")).parts
    want = [p for p in PurePosixPath(rel).parts if p != "."]
    n = len(want) + extra
    if len(parts) <= n + 1 or list(parts[len(parts) - n : len(parts) - extra]) != want:
        return None
    root = str(PurePosixPath(*parts[: len(parts) - n]))
    return None if root == "/" else root


# URI forms of a path: (prefix of an absolute path, prefix of the relative one). A relative
# SQLite URI has three slashes; a file URI cannot be relative: it becomes a plain path.
URI_FORMS = (("", ""), ("file://", ""), (SQLITE, SQLITE))


def _relative(value: Any, roots: Sequence[str]) -> Any:
    if isinstance(value, str):
        for root in roots:
            if value == root:
                return "."
            for absolute, relative in URI_FORMS:
                if value.startswith(absolute + root + "/"):
                    return relative + value[len(absolute) + len(root) + 1 :]
        return value
    if isinstance(value, dict):
        return {_relative(k, roots): _relative(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, roots) for v in value]
    return value


def _differences(a: dict, b: dict) -> list[str]:
    """The top-level fields where two (portable) records differ."""
    return [
        k for k in sorted(a.keys() | b.keys()) if _canon(a.get(k, _GONE)) != _canon(b.get(k, _GONE))
    ]


_GONE = "\0missing"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- export and import --------------------------------------------------------------------


def export_store(
    store: RunStore,
    dest: str | os.PathLike,
    *,
    runs: Sequence[str] | None = None,
    skip_conflicts: bool = False,
    wandb_dirs: Sequence[str | os.PathLike] = (),
    on_bad: Callable[[BadRecordError], None] | None = warn_bad_record,
) -> TransferResult:
    """Write the runs of `store` (all, or those `runs` names: ids, id prefixes, run folders)
    into the bundle `dest`: a folder (new, empty, or a bundle, which gains the runs: exporting
    again is idempotent) or, for a name ending in .tar.gz/.tgz, an archive of that folder.
    W&B folders are found at their recorded path, else under `wandb_dirs`. A run the bundle
    holds in another version is a conflict (see `import_store`)."""
    dest = Path(dest)
    if runs:
        chosen = dict.fromkeys(store.resolve(r).parent for r in runs)
        folders = list(chosen)
    else:
        folders = [store.path / i for i in store.ids()]
    search = [Path(d) for d in wandb_dirs] + [store.path.parent]
    if not dest.name.endswith(TAR_SUFFIXES):
        _check_bundle_dest(dest)
        result = _transfer(
            folders, RunStore(dest), search, str(store.path), on_bad, skip_conflicts, None
        )
        _write_manifest(dest)
        return result
    tmp = temp_dir_for(dest)
    try:
        result = _transfer(
            folders, RunStore(tmp), search, str(store.path), on_bad, skip_conflicts, None
        )
        _write_manifest(tmp)
        with atomic_path(dest) as packed, tarfile.open(packed, "w:gz") as tar:
            for name in sorted(os.listdir(tmp)):
                tar.add(tmp / name, arcname=name, filter=_anonymous)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.store = str(dest)
    return result


def import_store(
    store: RunStore,
    source: str | os.PathLike,
    *,
    runs: Sequence[str] | None = None,
    skip_conflicts: bool = False,
    wandb_dirs: Sequence[str | os.PathLike] = (),
    on_bad: Callable[[BadRecordError], None] | None = warn_bad_record,
) -> TransferResult:
    """Bring the runs of `source` into `store` (see the module docstring): a bundle folder or
    archive, a run store folder (e.g. rsynced from a cluster), a project folder, or one run
    folder. `runs`: only the runs whose id starts with one of these. W&B folders are found in
    the source's run folders, at their recorded path, next to the source's store (a project
    rsynced whole), or under `wandb_dirs`. Raises ImportConflictError (nothing written) on a
    conflict unless `skip_conflicts`."""
    source = Path(source)
    if not source.exists():
        raise TransferError(
            f"{source} does not exist; fix: give a bundle (`liveml runs export`), a run store "
            "folder (a project's runs/), a project folder or a run folder"
        )
    unpacked = None
    label = None
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise TransferError(
                f"{source} is neither a folder nor a .tar.gz bundle; fix: give a bundle "
                "(`liveml runs export`), a run store folder, a project folder or a run folder"
            )
        unpacked = _unpack(source, store.path)
        label = (unpacked, str(source))
    try:
        root, folders = _source_runs(unpacked or source)
        _check_manifest(root, source)
        if runs:
            folders = _select(folders, runs, source)
        search = [Path(d) for d in wandb_dirs] + [root.parent]
        return _transfer(folders, store, search, str(source), on_bad, skip_conflicts, label)
    finally:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)


@dataclass
class _Incoming:
    folder: Path  # the source run folder
    run_id: str
    record: dict  # portable
    record_label: str
    files: list[str]  # relative paths of its regular files, without run.json and wandb/
    wandb: Path | None  # its located W&B run folder
    wandb_name: str | None
    fill: list[str] = field(default_factory=list)  # for a run already there: files it lacks
    fill_wandb: bool = False


def _transfer(
    folders: list[Path],
    store: RunStore,
    search: list[Path],
    source_label: str,
    on_bad: Callable[[BadRecordError], None] | None,
    skip_conflicts: bool,
    label: tuple[Path, str] | None,
) -> TransferResult:
    """Plan every run (reading only), then write the new ones and complete the present ones."""
    result = TransferResult(source=source_label, store=str(store.path))

    def shown(path: Path) -> str:
        if label is not None and path.is_relative_to(label[0]):
            return f"{label[1]}:{path.relative_to(label[0]).as_posix()}"
        return str(path)

    new: list[_Incoming] = []
    fills: list[_Incoming] = []
    seen: dict[str, _Incoming] = {}
    for folder in folders:
        incoming = _read_incoming(folder, store, search, result, on_bad, shown)
        if incoming is None:
            continue
        first = seen.get(incoming.run_id)
        if first is not None:  # two folders of the source hold the same run id
            diffs = _differences(first.record, incoming.record)
            if diffs:
                result.conflicts.append(
                    Conflict(incoming.run_id, incoming.record_label, first.record_label, diffs)
                )
            continue
        seen[incoming.run_id] = incoming
        state = _compare_with_store(incoming, store, result)
        if state == "new":
            new.append(incoming)
        elif state == "present":
            result.present.append(incoming.run_id)
            if incoming.fill or incoming.fill_wandb:
                fills.append(incoming)
    if result.conflicts and not skip_conflicts:
        raise ImportConflictError(result.conflicts, source_label, store.path)
    if new or fills:
        store.path.mkdir(parents=True, exist_ok=True)
        sweep_once(store.path)
    for incoming in new:
        if _publish(incoming, store, result):
            result.added.append(incoming.run_id)
    for incoming in fills:
        _complete(incoming, store.path / incoming.run_id)
        result.completed.append(incoming.run_id)
    return result


def _read_incoming(
    folder: Path,
    store: RunStore,
    search: list[Path],
    result: TransferResult,
    on_bad: Callable[[BadRecordError], None] | None,
    shown: Callable[[Path], str],
) -> _Incoming | None:
    """The run in `folder`, made portable, its files and W&B folder found; None (and the
    reason in `result.skipped`) when it cannot be imported."""
    path = folder / RECORD
    if not path.is_file():
        result.skipped.append(
            (shown(folder), f"no {RECORD} (a run still being written, or not a run folder)")
        )
        return None
    try:
        record = read_record(path)
        if not RUN_ID.fullmatch(record["run_id"]):
            raise BadRecordError(
                path,
                f"run_id {record['run_id']!r} cannot name a run folder "
                "(letters, digits, '.', '_' and '-' only, at most 200)",
            )
    except BadRecordError as e:
        error = BadRecordError(shown(path), e.problem) if e.problem else e
        if on_bad is not None:
            on_bad(error)
        result.skipped.append((shown(path), e.problem or str(e)))
        return None
    run_id = record["run_id"]
    wandb, name = _find_wandb(folder, record, search)
    if name is not None and wandb is None:
        where = (record.get("wandb") or {}).get("dir")
        result.warnings.append(
            f"run {run_id}: its W&B folder {name} was not found (recorded at {where}); the run "
            "is imported without it. Fix: pass the folder holding it with --wandb DIR "
            "(Python: wandb_dirs=[DIR]) and import again: the folder is added"
        )
    files, links = _tree(folder)
    for rel in links:
        result.warnings.append(
            f"run {run_id}: {shown(folder / rel)} is a link or special file: left out"
        )
    return _Incoming(
        folder=folder,
        run_id=run_id,
        record=portable_record(record, folder.parent),
        record_label=shown(path),
        files=files,
        wandb=wandb,
        wandb_name=name if wandb is not None else None,
    )


def _compare_with_store(incoming: _Incoming, store: RunStore, result: TransferResult) -> str:
    """ "new", "present" (filling `incoming.fill`) or "conflict" (added to `result`)."""
    dest = store.path / incoming.run_id
    if not os.path.lexists(dest):
        return "new"
    dest_record = dest / RECORD

    def conflict(differs: list[str]) -> str:
        result.conflicts.append(
            Conflict(incoming.run_id, incoming.record_label, str(dest_record), differs)
        )
        return "conflict"

    if dest.is_symlink() or not dest.is_dir() or not dest_record.is_file():
        return conflict([f"the store's {dest} is not a run folder (no {RECORD})"])
    try:
        existing = read_record(dest_record)
    except BadRecordError as e:
        return conflict([f"the store's record is unusable ({e.problem or e})"])
    diffs = _differences(incoming.record, portable_record(existing, store.path))
    if diffs:
        return conflict(diffs)
    differing = []
    for rel in incoming.files:
        there = dest / rel
        if not os.path.lexists(there):
            incoming.fill.append(rel)
        elif (
            there.is_symlink()
            or not there.is_file()
            or not filecmp.cmp(incoming.folder / rel, there, shallow=False)
        ):
            differing.append(f"file {rel}")
    if differing:
        return conflict(differing)
    if incoming.wandb is not None and not os.path.lexists(dest / WANDB / incoming.wandb_name):
        # A run made here keeps its W&B folder where it was written: not copied next to it.
        here = wandb_folder(dest, existing)
        incoming.fill_wandb = here is None or not _is_wandb_run(here)
    return "present"


def _publish(incoming: _Incoming, store: RunStore, result: TransferResult) -> bool:
    """Build the run's folder under a temp name and rename it into place (see RunStore.save);
    False when a concurrent writer published the same id first (then compared like a present
    run)."""
    from liveml.tracking.index import add_published

    dest = store.path / incoming.run_id
    tmp = temp_dir_for(dest)
    try:
        make_public(tmp, 0o777)
        for rel in incoming.files:
            _copy_file(incoming.folder / rel, tmp / rel)
        if incoming.wandb is not None:
            _copy_tree(incoming.wandb, tmp / WANDB / incoming.wandb_name)
        data = _write_json(tmp / RECORD, incoming.record)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.lexists(dest):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            state = _compare_with_store(incoming, store, result)
            if state == "present":
                result.present.append(incoming.run_id)
            return False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    add_published(store.path, dest, data)
    return True


def _complete(incoming: _Incoming, dest: Path) -> None:
    """Add to a run already in the store the files it lacks (each atomically)."""
    for rel in incoming.fill:
        with atomic_path(dest / rel) as tmp:
            shutil.copy2(incoming.folder / rel, tmp)
    if incoming.fill_wandb:
        with atomic_dir(dest / WANDB / incoming.wandb_name) as tmp:
            _copy_tree(incoming.wandb, tmp)


# --- files --------------------------------------------------------------------------------


def _tree(folder: Path) -> tuple[list[str], list[str]]:
    """(regular files, links and special files) under a run folder, as relative POSIX paths,
    without run.json, the top-level wandb/ (W&B folders travel on their own) and hidden
    top-level entries (temps of killed writers)."""
    files, odd = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        rel = here.relative_to(folder)
        top = rel == Path(".")
        keep = []
        for d in sorted(dirnames):
            if top and (d.startswith(".") or d == WANDB):
                continue
            if (here / d).is_symlink():
                odd.append((rel / d).as_posix())
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if top and (f.startswith(".") or f == RECORD):
                continue
            p = here / f
            if p.is_symlink() or not p.is_file():
                odd.append((rel / f).as_posix())
            else:
                files.append((rel / f).as_posix())
    return files, odd


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    _fsync(dst)


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a W&B run folder: its regular files only (W&B links its core log to a host path)."""
    dst.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        out = dst / here.relative_to(src)
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        for d in dirnames:
            (out / d).mkdir(exist_ok=True)
        for f in filenames:
            p = here / f
            if not p.is_symlink() and p.is_file():
                _copy_file(p, out / f)


def _find_wandb(folder: Path, record: dict, search: list[Path]) -> tuple[Path | None, str | None]:
    """(the W&B run folder of the run in `folder` or None, its name or None when the record
    names none): in the run folder's wandb/, at the recorded absolute path, or under a search
    root (`<root>/<name>`, `<root>/wandb/<name>`, `<root>/<logger.dir>/wandb/<name>`)."""
    wandb = record.get("wandb")
    d = wandb.get("dir") if isinstance(wandb, dict) else None
    if not isinstance(d, str) or not d.strip():
        return None, None
    name = _basename(d)
    if not WANDB_RUN.fullmatch(name):
        return None, None  # not a W&B run folder: never looked for
    candidates = [folder / WANDB / name]
    if os.path.isabs(d):
        candidates.append(Path(d))
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    logger = config.get("logger") if isinstance(config.get("logger"), dict) else {}
    logger_dir = logger.get("dir")
    for root in search:
        candidates += [root / name, root / WANDB / name]
        if isinstance(logger_dir, str) and logger_dir and not os.path.isabs(logger_dir):
            candidates.append(root / logger_dir / WANDB / name)
    for c in candidates:
        if _is_wandb_run(c):
            return c, name
    return None, name


def _is_wandb_run(path: Path) -> bool:
    """A folder W&B wrote for one run: its `run-<id>.wandb` log or its `files/`."""
    try:
        if path.is_symlink() or not path.is_dir():
            return False
        with os.scandir(path) as it:
            return any(e.name.endswith(".wandb") or e.name == "files" for e in it)
    except OSError:
        return False


# --- sources and bundles ------------------------------------------------------------------


def _source_runs(source: Path) -> tuple[Path, list[Path]]:
    """(the folder holding the runs, the run folders) of an import source."""
    if (source / RECORD).is_file():
        return source.parent, [source]
    if not source.is_dir():
        raise TransferError(f"{source} is not a folder; fix: give a bundle or a run store folder")
    with os.scandir(source) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    dirs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    if (source / MANIFEST).is_file() or any((d / RECORD).is_file() for d in dirs):
        return source, dirs
    runs = _project_store(source)
    if runs is not None:
        return _source_runs(runs)
    if len(dirs) == 1 and len(entries) == 1:  # an archive of a store folder
        return _source_runs(dirs[0])
    if not entries:
        return source, []
    raise TransferError(
        f"no runs found in {source}; fix: give a bundle (`liveml runs export`), a run store "
        f"folder (a project's runs/, folders holding {RECORD}), a project folder or a run folder"
    )


def _project_store(folder: Path) -> Path | None:
    """The run store of the project in `folder` (params.yaml's paths.runs, else runs/)."""
    rel = "runs"
    params = folder / "params.yaml"
    if params.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(params.read_text()) or {}
            paths = loaded.get("paths") if isinstance(loaded, dict) else None
            if isinstance(paths, dict) and isinstance(paths.get("runs"), str):
                rel = paths["runs"]
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            pass
    runs = folder / rel
    return runs if runs.is_dir() and runs.resolve() != folder.resolve() else None


def _select(folders: list[Path], refs: Sequence[str], source: Path) -> list[Path]:
    chosen = [f for f in folders if any(f.name.startswith(r) for r in refs)]
    missing = [r for r in refs if not any(f.name.startswith(r) for f in folders)]
    if missing:
        raise RunNotFoundError(
            f"no run of {source} starts with {', '.join(map(repr, missing))} "
            f"({len(folders)} runs there); fix: give run ids or prefixes of that source"
        )
    return chosen


def _check_manifest(root: Path, source: Path) -> None:
    path = root / MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise TransferError(
            f"{source}: {MANIFEST} is unreadable ({e}); fix: export it again"
        ) from e
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise TransferError(
            f"{source} is a bundle of format version {version!r}; this liveml reads version "
            f"{BUNDLE_VERSION}; fix: upgrade liveml (pip install -U liveml)"
        )


def _check_bundle_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise TransferError(f"{dest} exists and is not a folder; fix: choose another destination")
    if dest.is_dir() and not (dest / MANIFEST).is_file():
        with os.scandir(dest) as it:
            if any(True for _ in it):
                raise TransferError(
                    f"{dest} is a folder with files but not a bundle; fix: export into a new "
                    "or empty folder (or an earlier bundle, which gains the runs)"
                )


def _write_manifest(folder: Path) -> None:
    from liveml.core.atomic import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        folder / MANIFEST,
        {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "runs": RunStore(folder).ids(),
        },
    )


def _unpack(archive: Path, store_dir: Path) -> Path:
    """Extract `archive` into a temp folder of the store (same file system: runs are renamed
    into place), with tarfile's `data` filter: no absolute paths, no links out, no devices."""
    tmp = temp_dir_for(store_dir / "import")
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TransferError(
            f"cannot unpack {archive} ({e}); fix: copy the bundle again, or unpack it yourself "
            "and import the folder"
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No user or group of this host in the archive."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
