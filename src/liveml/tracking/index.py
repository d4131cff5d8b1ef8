"""The run store's SQLite index: `liveml compare` over 100,000 runs without reading 100,000 files.

Each run's `run.json` stays the source of truth; `runs/.index/runs.sqlite` (WAL mode) is a cache
of what `compare` shows, and can be deleted at any time (the next reader rebuilds it).

- Writers: `RunStore.save` publishes a run folder (rename) and then adds it to the index in one
  transaction, if the index exists (a writer never builds it; a busy index is skipped).
- Readers check it first. The gate is one `stat` of the runs folder: adding, renaming or
  removing a run folder changes its mtime. When it changed (or the index is missing, of another
  folder, or another schema), the reader lists the folder names, indexes the new folders (reading
  their run.json), drops the vanished ones, and records the mtime it saw before listing, all in
  one write transaction; it trusts a recorded mtime only when the folder was last changed at least
  SETTLE_NS before the listing (coarse file-system clocks). A run.json edited in place inside an
  existing folder is picked up by `RunIndex.sync(full=True)`, which stats every record.
- Queries run in one read transaction: a consistent snapshot, so a run being added by a
  concurrent writer is either wholly in a result or not at all; rows point at published folders
  only, so a half-written run is never shown.
- Bad records (see `runs.read_record`) never enter the index: they are kept aside with their
  problem, re-checked when their file changes, and named on every read like before.

What makes 100k runs fast: per (task, status) group and config key, the index keeps how many runs
have the key and the smallest/largest value id, so the varied keys of a group selection come from
a few hundred numbers; only *candidate* keys (ones that vary, or are missing in some runs, anywhere
in the store) get per-run columns holding their table cell and JSON text, formatted once by
Python when the run is indexed (so they match `compare.format_value` exactly); SQLite then pads
and joins a row's cells with printf. A key that becomes a candidate later gets its columns filled
in for the existing runs from its one store-wide value.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveml.tracking.lineage import canonical_json
from liveml.tracking.runs import RECORD, BadRecordError, read_record

INDEX_DIR = ".index"
INDEX_FILE = "runs.sqlite"
SCHEMA = 2
# A runs-folder mtime newer than this, seen at listing time, is not trusted on the next read:
# two changes within one file-system clock tick leave the same mtime.
SETTLE_NS = 2_000_000_000
# How long a writer waits for the index (then leaves the run to the next reader's sync), and how
# long a reader waits for another process that is building or updating it.
WRITER_TIMEOUT_S = 5.0
READER_TIMEOUT_S = 900.0
# SQLite's default limit is 2000 columns per table (3 per candidate key or metric).
MAX_COLUMNS = 1900
# SQLite's default limit of function arguments is 127: printf calls are chunked.
PRINTF_CHUNK = 100
# Pseudo keys in the stats: the code and data columns (their equality and cell widths), and the
# cell widths of the run, task, sweep and status columns.
CODE_COL, DATA_COL, W_RUN, W_TASK, W_SWEEP, W_STATUS = -1, -2, -3, -4, -5, -6
# What str.rstrip() strips: every character str.isspace() accepts (for SQLite's rtrim).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS cols(
    col INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, cand INTEGER NOT NULL,
    UNIQUE(kind, key));
CREATE TABLE IF NOT EXISTS groups(
    gid INTEGER PRIMARY KEY, task TEXT, status TEXT NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats(
    gid INTEGER NOT NULL, col INTEGER NOT NULL, n INTEGER NOT NULL,
    elo INTEGER, ehi INTEGER, vlo INTEGER, vhi INTEGER, w INTEGER NOT NULL,
    PRIMARY KEY(gid, col));
CREATE TABLE IF NOT EXISTS eqs(eq INTEGER PRIMARY KEY, ident BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS vals(
    vid INTEGER PRIMARY KEY, cell TEXT, json TEXT, srank INTEGER, snum, stxt BLOB);
CREATE TABLE IF NOT EXISTS layouts(lid INTEGER PRIMARY KEY, cols TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS runs(
    folder TEXT NOT NULL, id TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, gid INTEGER NOT NULL,
    task TEXT, status TEXT NOT NULL, sweep_name TEXT, sweep_label TEXT, sweep_exp TEXT,
    code_eq INTEGER NOT NULL, data_eq INTEGER NOT NULL, layout INTEGER NOT NULL,
    id_cell TEXT, task_cell TEXT, sweep_cell TEXT, status_cell TEXT, code_cell TEXT,
    data_cell TEXT, id_json TEXT, task_json TEXT, sweep_json TEXT, status_json TEXT,
    code_json TEXT, data_json TEXT, code_label TEXT, data_label TEXT,
    PRIMARY KEY(id, folder)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS runs_folder ON runs(folder);
CREATE INDEX IF NOT EXISTS runs_layout ON runs(layout, id, folder);
CREATE TABLE IF NOT EXISTS bad(
    folder TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, problem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending(folder TEXT PRIMARY KEY);
"""


class IndexUnavailable(RuntimeError):
    """The index cannot be used here (read-only folder, a file system without the locks SQLite
    needs, too many columns): callers read the run.json files instead."""


def index_path(store_path: str | os.PathLike) -> Path:
    return Path(store_path) / INDEX_DIR / INDEX_FILE


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """A config value as the index keeps it: identity (equal iff compare._identity is), the
    variant that tells `1` from `1.0`, the table cell, the JSON text and the sort key."""

    ident: bytes
    variant: int
    cell: str
    json: str
    srank: int | None  # None: sorts with the missing values (null, NaN)
    snum: float | int | None
    stxt: bytes | None


def encode_value(value: Any) -> Value:
    from liveml.tracking.compare import _cut, format_value, json_safe

    json_text = _text(json.dumps(json_safe(value), indent=2).replace("\n", "\n    "))
    cell = _text(_cut(format_value(value)))
    if isinstance(value, bool) or value is None:
        word = "null" if value is None else ("true" if value else "false")
        return Value(
            b"c" + word.encode(),
            0,
            cell,
            json_text,
            None if value is None else 2,
            None,
            None if value is None else word.encode(),
        )
    if isinstance(value, int):
        try:
            ident = repr(float(value))
        except OverflowError:
            ident = str(value)
        snum = value if -(2**63) <= value < 2**63 else float(value)
        return Value(b"n" + ident.encode(), 0, cell, json_text, 0, snum, None)
    if isinstance(value, float):
        if math.isnan(value):
            return Value(b"nan", 1, cell, json_text, None, None, None)
        variant = 2 if value == 0 and math.copysign(1, value) < 0 else 1
        return Value(b"n" + repr(value + 0.0).encode(), variant, cell, json_text, 0, value, None)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return Value(b"s" + raw, 0, cell, json_text, 1, None, raw)
    try:
        canon = canonical_json(value)
    except UnicodeEncodeError:
        canon = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return Value(b"j" + canon, 0, cell, json_text, 2, None, canon)


def _text(s: str) -> str:
    """`s`, with lone surrogates (valid in JSON, not in UTF-8) shown as escapes."""
    try:
        s.encode()
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode()


# --- the index ----------------------------------------------------------------------------


class RunIndex:
    """The index of the run store at `store_path` (see the module docstring)."""

    def __init__(self, store_path: str | os.PathLike):
        self.store = Path(store_path)
        self.file = index_path(self.store)
        self.con: sqlite3.Connection | None = None

    # -- connection

    def open(self, *, create: bool = True, timeout: float = READER_TIMEOUT_S) -> RunIndex:
        """Connect (creating the index with `create`); IndexUnavailable when it cannot be used.
        Without `create`, a missing index raises FileNotFoundError."""
        if not self.file.is_file():
            if not create:
                raise FileNotFoundError(self.file)
            try:
                self.file.parent.mkdir(exist_ok=True)
            except OSError as e:
                raise IndexUnavailable(f"cannot create {self.file.parent} ({e})") from e
        for attempt in range(2):
            try:
                self.con = self._connect(timeout)
                self._ensure_schema()
                return self
            except sqlite3.DatabaseError as e:
                self.close()
                if attempt or not create or "not a database" not in str(e):
                    raise IndexUnavailable(f"{self.file}: {e}") from e
                # A damaged cache: drop it and build a new one.
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.file}{suffix}").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _connect(self, timeout: float) -> sqlite3.Connection:
        con = sqlite3.connect(self.file, timeout=timeout, isolation_level=None)
        # Big pages: a table scan (what `compare` does) reads fewer, fuller pages. Only takes
        # effect on a new file, before WAL mode is set.
        con.execute("PRAGMA page_size=65536")
        con.execute("PRAGMA journal_mode=WAL")
        # Sorting a whole table (`--sort`) in memory, not in temp files.
        con.execute("PRAGMA temp_store=MEMORY")
        con.execute("PRAGMA cache_size=-262144")
        con.execute(
            "PRAGMA synchronous=NORMAL"
        )  # a cache: the last commit may be lost on power loss
        return con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_schema(self) -> None:
        con = self.con
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA:
            return
        with self._write():
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA:
                return
            # Another schema (or none yet): start empty. Dropped in a transaction, so a reader
            # of the old schema never sees half of it.
            for (name,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table'"
            ).fetchall():
                con.execute(f'DROP TABLE "{name}"')
            for stmt in _SCHEMA_SQL.split(";"):
                if stmt.strip():
                    con.execute(stmt)
            con.execute(f"PRAGMA user_version={SCHEMA}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state of the index."""
        con = self.con
        con.execute("BEGIN")
        try:
            yield con
        finally:
            con.execute("COMMIT")

    def _meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    # -- keeping it current

    def _gate(self) -> tuple[int, int, int]:
        st = os.stat(self.store)
        return st.st_mtime_ns, st.st_ino, st.st_dev

    def _fresh(self, gate: tuple[int, int, int]) -> bool:
        return self._meta("gate") == json.dumps(gate) and not self._recheck_needed()

    def _recheck_needed(self) -> bool:
        """Whether a bad or pending folder's run.json changed since it was looked at."""
        for folder, mtime, size in self.con.execute(
            "SELECT folder, mtime_ns, size FROM bad UNION ALL "
            "SELECT folder, NULL, NULL FROM pending"
        ).fetchall():
            st = _stat(self.store / folder / RECORD)
            if (st and (st.st_mtime_ns, st.st_size)) != (
                (mtime, size) if mtime is not None else None
            ):
                return True
        return False

    def sync(self, *, full: bool = False) -> dict[str, int]:
        """Bring the index up to date with the folder (see the module docstring); with `full`,
        also re-read every run.json whose mtime or size differs from the indexed one.
        Returns counts: added, removed, bad."""
        gate = self._gate()
        if not full and self._fresh(gate):
            return {"added": 0, "removed": 0, "bad": 0}
        with self._write():
            gate = self._gate()
            if not full and self._fresh(gate):
                return {"added": 0, "removed": 0, "bad": 0}
            # An index that was made for another folder (copied along with the runs): check
            # every record against it, not just the listing.
            where = json.dumps(gate[1:])
            full = full or self._meta("where") != where
            started = time.time_ns()
            names = _list_runs(self.store)
            known = {
                f: (m, s) for f, m, s in self.con.execute("SELECT folder, mtime_ns, size FROM runs")
            }
            bad = {
                f: (m, s) for f, m, s in self.con.execute("SELECT folder, mtime_ns, size FROM bad")
            }
            pending = {f for (f,) in self.con.execute("SELECT folder FROM pending")}
            gone = (known.keys() | bad.keys() | pending) - names
            todo: list[str] = []
            for name in names:
                if name in known and not full:
                    continue
                st = _stat(self.store / name / RECORD)
                was = known.get(name) or bad.get(name)
                if st is not None and was == (st.st_mtime_ns, st.st_size):
                    continue
                if name in known or name in bad:
                    gone.add(name)
                if name in pending and st is None:
                    continue
                todo.append(name)
            batch = _Batch(self, bulk=len(todo) > 50)
            batch.remove(sorted(gone))
            added = bad_count = 0
            for name in todo:
                path = self.store / name / RECORD
                st = _stat(path)
                if st is None:  # a folder still being filled (not made by RunStore.save)
                    self.con.execute("INSERT OR IGNORE INTO pending VALUES(?)", (name,))
                    continue
                self.con.execute("DELETE FROM pending WHERE folder=?", (name,))
                try:
                    record = read_record(path)
                except BadRecordError as e:
                    self._set_bad(name, st, e)
                    bad_count += 1
                    continue
                batch.add(name, st, record)
                added += 1
            batch.flush()
            settled = started - gate[0] > SETTLE_NS
            self._set_meta("gate", json.dumps(gate) if settled else None)
            self._set_meta("where", where)
        return {"added": added, "removed": len(gone), "bad": bad_count}

    def _set_bad(self, name: str, st: os.stat_result, error: BadRecordError) -> None:
        problem = getattr(error, "problem", None) or str(error)
        self.con.execute(
            "INSERT OR REPLACE INTO bad VALUES(?, ?, ?, ?)",
            (name, st.st_mtime_ns, st.st_size, problem),
        )

    def add(self, folder: str | os.PathLike, record: dict | None = None) -> bool:
        """Index the published run folder `folder` (a writer, right after publishing it);
        False when the record is bad (kept aside like in a sync). `record` is what the folder's
        run.json holds, when the caller has it parsed."""
        name = Path(folder).name
        path = self.store / name / RECORD
        with self._write():
            st = os.stat(path)
            row = self.con.execute(
                "SELECT mtime_ns, size FROM runs WHERE folder=?", (name,)
            ).fetchone()
            if row == (st.st_mtime_ns, st.st_size):
                return True  # a reader indexed it already
            batch = _Batch(self, bulk=False)
            if row is not None:
                batch.remove([name])
            self.con.execute("DELETE FROM pending WHERE folder=?", (name,))
            try:
                record = read_record(path) if record is None else record
            except BadRecordError as e:
                self._set_bad(name, st, e)
                return False
            self.con.execute("DELETE FROM bad WHERE folder=?", (name,))
            batch.add(name, st, record)
            batch.flush()
        return True

    def bad_records(self) -> list[BadRecordError]:
        """The store's unusable records, oldest folder first, as the errors reading them gave."""
        out = []
        for folder, problem in self.con.execute("SELECT folder, problem FROM bad ORDER BY folder"):
            out.append(bad_error(self.store / folder / RECORD, problem))
        return out

    def folders(self, prefix: str = "") -> list[str]:
        """Folder names holding a run.json (usable or not), sorted; those starting with
        `prefix` when given."""
        hi = prefix + "\U0010ffff"
        rows = self.con.execute(
            "SELECT folder FROM runs WHERE folder >= ? AND folder < ? UNION "
            "SELECT folder FROM bad WHERE folder >= ? AND folder < ? ORDER BY 1",
            (prefix, hi, prefix, hi),
        ).fetchall()
        return [f for (f,) in rows if f.startswith(prefix)]


def bad_error(path: Path, problem: str) -> BadRecordError:
    return BadRecordError(path, problem)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _list_runs(store: Path) -> set[str]:
    """Names of the run folders (not the index, not a writer's temp folder)."""
    with os.scandir(store) as it:
        return {e.name for e in it if not e.name.startswith(".") and e.is_dir()}


# --- adding and removing runs -------------------------------------------------------------

# The per-run fields of `runs`, as _Batch.add fills them.
FIXED_FIELDS = (
    "folder",
    "id",
    "mtime_ns",
    "size",
    "gid",
    "task",
    "status",
    "sweep_name",
    "sweep_label",
    "sweep_exp",
    "code_eq",
    "data_eq",
    "id_cell",
    "task_cell",
    "sweep_cell",
    "status_cell",
    "code_cell",
    "data_cell",
    "id_json",
    "task_json",
    "sweep_json",
    "status_json",
    "code_json",
    "data_json",
    "code_label",
    "data_label",
)
# Rows kept in memory before a bulk sync inserts them (bounds its memory at 100k runs).
FLUSH_EVERY = 4000


@dataclass
class _Pending:
    gid: int
    lid: int
    cols: tuple[int, ...]
    vids: array
    fixed: tuple
    metrics: dict[int, tuple]


class _Batch:
    """Runs added or removed in one write transaction. Stats (counts, value ranges, cell
    widths per group and key) are kept in memory and written back by `flush`, which also
    decides which keys are candidates (adding their columns) and inserts the rows."""

    def __init__(self, index: RunIndex, bulk: bool):
        self.con = con = index.con
        self.bulk = bulk
        self.cols = {
            (k, key): (c, bool(cand))
            for c, k, key, cand in con.execute("SELECT col, kind, key, cand FROM cols")
        }
        self.col_kind = {c: (k, key) for (k, key), (c, _) in self.cols.items()}
        self.groups = {
            (t, s): [g, n] for g, t, s, n in con.execute("SELECT gid, task, status, n FROM groups")
        }
        self.layouts = {
            tuple(json.loads(cols)): lid
            for lid, cols in con.execute("SELECT lid, cols FROM layouts")
        }
        self.stats: dict[tuple[int, int], list] = {
            (g, c): list(rest)
            for g, c, *rest in con.execute("SELECT gid, col, n, elo, ehi, vlo, vhi, w FROM stats")
        }
        self.eqs: dict[bytes, int] = dict(con.execute("SELECT ident, eq FROM eqs")) if bulk else {}
        self.next_eq = (con.execute("SELECT max(eq) FROM eqs").fetchone()[0] or 0) + 1
        self.new_vals: dict[int, Value] = {}
        self.widths: dict[int, int] = {}  # vid -> len(cell), of the values seen here
        self.encoded: dict[tuple, tuple[int, int]] = {}  # (type, value) -> (vid, width)
        self.rows: list[_Pending] = []
        self.removed = False
        self.stats_changed = False

    # -- ids

    def _eq(self, ident: bytes) -> int:
        eq = self.eqs.get(ident)
        if eq is None and not self.bulk:
            row = self.con.execute("SELECT eq FROM eqs WHERE ident=?", (ident,)).fetchone()
            eq = row[0] if row else None
        if eq is None:
            eq = self.next_eq
            self.next_eq += 1
            self.con.execute("INSERT INTO eqs VALUES(?, ?)", (eq, ident))
        self.eqs[ident] = eq
        return eq

    def _vid(self, value: Any) -> tuple[int, int]:
        """(value id, cell width) of a config value."""
        key = None
        # Scalars by type and value (but 0.0 == -0.0: those two are not cached).
        if value is None or isinstance(value, str | int) or (isinstance(value, float) and value):
            key = (type(value), value)
            found = self.encoded.get(key)
            if found is not None:
                return found
        v = encode_value(value)
        vid = self._eq(v.ident) * 4 + v.variant
        if vid not in self.widths:
            self.widths[vid] = len(v.cell)
            self.new_vals[vid] = v
        found = (vid, self.widths[vid])
        if key is not None:
            self.encoded[key] = found
        return found

    def _col(self, kind: str, key: str) -> int:
        found = self.cols.get((kind, key))
        if found is not None:
            return found[0]
        cur = self.con.execute("INSERT INTO cols(kind, key, cand) VALUES(?, ?, 0)", (kind, key))
        col = cur.lastrowid
        self.cols[(kind, key)] = (col, False)
        self.col_kind[col] = (kind, key)
        if kind == "metric":
            self._add_columns(col, ("m", ""), ("mc", "TEXT"), ("mj", "TEXT"))
        return col

    def _add_columns(self, col: int, *names: tuple[str, str]) -> None:
        width = len(self.con.execute("PRAGMA table_info(runs)").fetchall())
        if width + len(names) > MAX_COLUMNS:
            raise IndexUnavailable(f"more than {MAX_COLUMNS} columns needed")
        for prefix, typ in names:
            self.con.execute(f"ALTER TABLE runs ADD COLUMN {prefix}{col} {typ}")

    def _group(self, task: str | None, status: str) -> list:
        found = self.groups.get((task, status))
        if found is None:
            cur = self.con.execute(
                "INSERT INTO groups(task, status, n) VALUES(?, ?, 0)", (task, status)
            )
            found = self.groups[(task, status)] = [cur.lastrowid, 0]
        return found

    def _layout(self, cols: tuple[int, ...]) -> int:
        lid = self.layouts.get(cols)
        if lid is None:
            cur = self.con.execute("INSERT INTO layouts(cols) VALUES(?)", (json.dumps(cols),))
            lid = self.layouts[cols] = cur.lastrowid
        return lid

    def _stat(self, gid: int, col: int, eq=None, vid=None, width: int = 0, n: int = 1) -> None:
        """Count a value of key `col` in group `gid` (n=-1: uncount, ranges left as they are)."""
        s = self.stats.get((gid, col))
        if s is None:
            self.stats[(gid, col)] = [n, eq, eq, vid, vid, width]
            return
        s[0] += n
        if eq is not None:
            if s[1] is None or eq < s[1]:
                s[1] = eq
            if s[2] is None or eq > s[2]:
                s[2] = eq
            if vid < s[3]:
                s[3] = vid
            if vid > s[4]:
                s[4] = vid
        if width > s[5]:
            s[5] = width

    # -- add

    def add(self, name: str, st: os.stat_result, record: dict) -> None:
        from liveml.tracking.compare import (
            EXCLUDED_GROUPS,
            _cut,
            code_label,
            data_label,
            flatten,
            format_value,
            sweep_info,
        )

        task = record.get("task")
        status = record.get("status") or "finished"
        group = self._group(task, status)
        group[1] += 1
        gid = group[0]
        self.stats_changed = True
        flat = flatten(record.get("config") or {}, exclude=EXCLUDED_GROUPS)
        cols = tuple(self._col("param", k) for k in flat)
        vids = array("q")
        stat = self._stat
        for col, value in zip(cols, flat.values(), strict=True):
            vid, width = self._vid(value)
            vids.append(vid)
            stat(gid, col, vid >> 2, vid, width)
        metrics = {}
        for key, value in (record.get("metrics") or {}).items():
            col = self._col("metric", key)
            cell = _cut(format_value(value))
            stat(gid, col, width=len(cell))
            safe = None if isinstance(value, float) and math.isnan(value) else value
            if isinstance(safe, int) and not -(2**63) <= safe < 2**63:
                safe = float(safe)
            finite = not isinstance(value, float) or math.isfinite(value)
            metrics[col] = (safe, cell, json.dumps(value) if finite else "null")
        sweep = sweep_info(record)
        run_id = record.get("run_id") or name
        label = sweep["label"] if sweep else None
        dlabel, clabel = data_label(record), code_label(record)
        code_eq = self._eq(b"x" + canonical_json(record.get("code")))
        data_eq = self._eq(b"y" + canonical_json(record.get("data")))
        cells = [
            _text(_cut(run_id)),
            _text(_cut(format_value(task))),
            _text(_cut(label)) if sweep else None,
            _text(_cut(status)),
            _text(_cut(clabel)),
            _text(_cut(format_value(dlabel))),
        ]
        stat(gid, CODE_COL, code_eq, code_eq, len(cells[4]))
        stat(gid, DATA_COL, data_eq, data_eq, len(cells[5]))
        stat(gid, W_RUN, width=len(cells[0]))
        stat(gid, W_TASK, width=len(cells[1]))
        if sweep:
            stat(gid, W_SWEEP, width=len(cells[2]))
        stat(gid, W_STATUS, width=len(cells[3]))
        fixed = (  # in the order of FIXED_FIELDS
            name,
            run_id,
            st.st_mtime_ns,
            st.st_size,
            gid,
            task,
            status,
            sweep["name"] if sweep else None,
            label,
            sweep["experiment"] if sweep else None,
            code_eq,
            data_eq,
            *cells,
            _text(json.dumps(run_id)),
            _text(json.dumps(task)),
            _text(json.dumps(label)) if sweep else None,
            _text(json.dumps(status)),
            _text(json.dumps(clabel)),
            _text(json.dumps(dlabel)),
            _text(clabel),
            None if dlabel is None else _text(dlabel),
        )
        self.rows.append(_Pending(gid, self._layout(cols), cols, vids, fixed, metrics))
        if self.bulk and len(self.rows) >= FLUSH_EVERY:
            self.flush()

    # -- remove

    def remove(self, names: Sequence[str]) -> None:
        """Drop runs (and bad/pending entries) by folder name. A non-candidate key's counts are
        adjusted from the run's layout (its value is the one store-wide value, so the ranges
        hold); everything else is recounted from the table in `flush`."""
        if not names:
            return
        con = self.con
        layouts = {lid: json.loads(c) for lid, c in con.execute("SELECT lid, cols FROM layouts")}
        gid_group = {g[0]: g for g in self.groups.values()}
        for name in names:
            con.execute("DELETE FROM bad WHERE folder=?", (name,))
            con.execute("DELETE FROM pending WHERE folder=?", (name,))
            row = con.execute("SELECT gid, layout FROM runs WHERE folder=?", (name,)).fetchone()
            if row is None:
                continue
            gid, lid = row
            for col in layouts[lid]:
                if not self.cols[self.col_kind[col]][1]:
                    self._stat(gid, col, n=-1)
            gid_group[gid][1] -= 1
            con.execute("DELETE FROM runs WHERE folder=?", (name,))
            self.removed = self.stats_changed = True

    # -- flush

    def flush(self) -> None:
        con = self.con
        if self.new_vals:
            con.executemany(
                "INSERT OR IGNORE INTO vals VALUES(?, ?, ?, ?, ?, ?)",
                [
                    (vid, v.cell, v.json, v.srank, v.snum, v.stxt)
                    for vid, v in self.new_vals.items()
                ],
            )
            self.new_vals.clear()
        if self.removed:
            self._recount()
        self._promote()
        cand = sorted(c for (k, _), (c, is_cand) in self.cols.items() if k == "param" and is_cand)
        metric = sorted(c for (k, _), (c, _) in self.cols.items() if k == "metric")
        names = [*FIXED_FIELDS, "layout"]
        names += [f"{p}{c}" for c in cand for p in ("p", "c", "j")]
        names += [f"{p}{c}" for c in metric for p in ("m", "mc", "mj")]
        sql = f"INSERT INTO runs({', '.join(names)}) VALUES({', '.join('?' * len(names))})"  # nosec B608
        texts = self._texts(cand)
        none3 = (None, None, None)

        def row_of(r: _Pending) -> tuple:
            pos = dict(zip(r.cols, r.vids, strict=True))
            out = [*r.fixed, r.lid]
            for c in cand:
                vid = pos.get(c)
                out += none3 if vid is None else (vid, *texts[vid])
            for c in metric:
                out += r.metrics.get(c) or none3
            return tuple(out)

        con.executemany(sql, [row_of(r) for r in self.rows])
        self.rows.clear()
        if self.stats_changed:
            # The stats table is small (groups x keys): rewritten whole.
            con.execute("DELETE FROM stats")
            con.executemany(
                "INSERT INTO stats VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                [(g, c, *s) for (g, c), s in self.stats.items() if s[0] > 0],
            )
            # Empty groups stay (n = 0): their ids may be cached by this batch.
            con.executemany(
                "UPDATE groups SET n=? WHERE gid=?", [(n, g) for g, n in self.groups.values()]
            )
            self.stats_changed = False

    def _texts(self, cand: list[int]) -> dict[int, tuple[str, str]]:
        """(cell, JSON) of the values the pending rows hold in candidate columns."""
        wanted = set(cand)
        vids = {v for r in self.rows for c, v in zip(r.cols, r.vids, strict=True) if c in wanted}
        if not vids:
            return {}
        return {
            vid: (cell, js)
            for vid, cell, js in self.con.execute(
                "SELECT vid, cell, json FROM vals WHERE vid IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(vids)),),
            )
        }

    def _recount(self) -> None:
        """After removals: counts, ranges and widths of everything but the non-candidate keys,
        from the table (one grouped scan)."""
        cand = [c for (k, _), (c, is_cand) in self.cols.items() if k == "param" and is_cand]
        metric = [c for (k, _), (c, _) in self.cols.items() if k == "metric"]
        specs: list[tuple[int, str]] = [
            (
                CODE_COL,
                "count(*), min(code_eq), max(code_eq), min(code_eq), max(code_eq), "
                "max(length(code_cell))",
            ),
            (
                DATA_COL,
                "count(*), min(data_eq), max(data_eq), min(data_eq), max(data_eq), "
                "max(length(data_cell))",
            ),
            (W_RUN, "count(*), NULL, NULL, NULL, NULL, max(length(id_cell))"),
            (W_TASK, "count(*), NULL, NULL, NULL, NULL, max(length(task_cell))"),
            (W_SWEEP, "count(sweep_cell), NULL, NULL, NULL, NULL, max(length(sweep_cell))"),
            (W_STATUS, "count(*), NULL, NULL, NULL, NULL, max(length(status_cell))"),
        ]
        specs += [
            (
                c,
                f"count(p{c}), min(p{c} >> 2), max(p{c} >> 2), min(p{c}), max(p{c}), "
                f"max(length(c{c}))",
            )
            for c in cand
        ]
        specs += [(c, f"count(mc{c}), NULL, NULL, NULL, NULL, max(length(mc{c}))") for c in metric]
        recounted = {c for c, _ in specs}
        self.stats = {k: s for k, s in self.stats.items() if k[1] not in recounted}
        sql = f"SELECT gid, {', '.join(e for _, e in specs)} FROM runs GROUP BY gid"  # nosec B608
        for gid, *rest in self.con.execute(sql):
            for i, (col, _) in enumerate(specs):
                s = rest[6 * i : 6 * i + 6]
                if s[0]:
                    self.stats[(gid, col)] = [s[0], s[1], s[2], s[3], s[4], s[5] or 0]
        self.removed = False

    def _promote(self) -> None:
        """Make candidates of the keys that now vary (or are missing in some runs of a task)
        anywhere in the store: add their columns, filled in from their one value so far."""
        by_col: dict[int, list] = {}
        for (gid, col), s in self.stats.items():
            if s[0] > 0 and col >= 0:
                by_col.setdefault(col, []).append((gid, s))
        task_of = {g: t for (t, _), (g, _) in self.groups.items()}
        task_n: dict[Any, int] = {}
        for (t, _), (_gid, n) in self.groups.items():
            task_n[t] = task_n.get(t, 0) + n
        promoted = []
        for (kind, _key), (col, is_cand) in self.cols.items():
            if kind != "param" or is_cand or col not in by_col:
                continue
            entries = by_col[col]
            vids = {s[3] for _, s in entries} | {s[4] for _, s in entries}
            per_task: dict[Any, int] = {}
            for gid, s in entries:
                per_task[task_of[gid]] = per_task.get(task_of[gid], 0) + s[0]
            if len(vids) > 1 or any(n < task_n.get(t, 0) for t, n in per_task.items()):
                promoted.append(col)
        if not promoted:
            return
        con = self.con
        layouts = {lid: json.loads(c) for lid, c in con.execute("SELECT lid, cols FROM layouts")}
        for col in promoted:
            kind, key = self.col_kind[col]
            self._add_columns(col, ("p", "INTEGER"), ("c", "TEXT"), ("j", "TEXT"))
            self.cols[(kind, key)] = (col, True)
            con.execute("UPDATE cols SET cand=1 WHERE col=?", (col,))
            # Rows already in the table hold the key's one store-wide value (it was no
            # candidate): the value the stats table (as of the last flush) has for it.
            old = con.execute("SELECT vlo FROM stats WHERE col=? LIMIT 1", (col,)).fetchone()
            lids = [lid for lid, cols in layouts.items() if col in cols]
            if old is None or not lids:
                continue
            cell, js = con.execute("SELECT cell, json FROM vals WHERE vid=?", (old[0],)).fetchone()
            con.execute(
                f"UPDATE runs SET p{col}=?, c{col}=?, j{col}=? "  # nosec B608
                "WHERE layout IN (SELECT value FROM json_each(?))",
                (old[0], cell, js, json.dumps(lids)),
            )


# --- queries ------------------------------------------------------------------------------


# Oldest first: the table's own order (its primary key), ties by folder.
DEFAULT_ORDER = ("r.id, r.folder", "")

# Why the f-string queries below are exempt from bandit's B608 (SQL built from strings): the
# only text they splice into SQL is liveml's own, never a value from a user or a run record:
# fixed column names, generated ones (`p<int>`, `mc<int>`: integer ids looked up in
# `Query.cols`, so an unknown key fails before any SQL), `?` placeholders counted in code, and
# `Selection.where`, built only by `Selection.narrowed` from literal conditions with `?`
# placeholders. Every value (task, status, sweep name, folder lists as JSON) is bound.


@dataclass
class Selection:
    """Which runs of the index a query covers: an SQL condition over `runs r`, and the
    (task, status) groups it is the union of (None when it is not one)."""

    where: str = "1"
    args: tuple = ()
    gids: tuple[int, ...] | None = None

    def narrowed(self, cond: str, args: tuple, gids: tuple[int, ...] | None) -> Selection:
        return Selection(f"({self.where}) AND ({cond})", self.args + args, gids)


@dataclass
class Columns:
    params: list[str]
    show_code: bool
    show_data: bool
    metrics: list[str]
    cols: dict[tuple[str, str], int] = field(default_factory=dict)


class Query:
    """Read-side operations over one snapshot of the index."""

    def __init__(self, index: RunIndex):
        self.index = index
        self.con = index.con
        self.cols = {
            (k, key): (c, bool(cand))
            for c, k, key, cand in self.con.execute("SELECT col, kind, key, cand FROM cols")
        }
        self.groups = {
            g: (t, s, n)
            for g, t, s, n in self.con.execute("SELECT gid, task, status, n FROM groups")
        }

    def all(self) -> Selection:
        return Selection(gids=tuple(self.groups))

    def count(self, sel: Selection) -> int:
        if sel.gids is not None:
            return sum(self.groups[g][2] for g in sel.gids)
        sql = f"SELECT count(*) FROM runs r WHERE {sel.where}"  # nosec B608
        return self.con.execute(sql, sel.args).fetchone()[0]

    def distinct(self, sel: Selection, column: str) -> list:
        return [
            v
            for (v,) in self.con.execute(
                f"SELECT DISTINCT {column} FROM runs r WHERE {sel.where}",  # nosec B608
                sel.args,
            )
        ]

    def by_task(self, sel: Selection, task: str) -> Selection:
        gids = None
        if sel.gids is not None:
            gids = tuple(g for g in sel.gids if self.groups[g][0] == task)
        return sel.narrowed("r.task = ?", (task,), gids)

    def by_status(self, sel: Selection, status: str) -> Selection:
        gids = None
        if sel.gids is not None:
            gids = tuple(g for g in sel.gids if self.groups[g][1] == status)
        return sel.narrowed("r.status = ?", (status,), gids)

    def swept(self, sel: Selection) -> Selection:
        return sel.narrowed("r.sweep_name IS NOT NULL", (), None)

    def last_sweep(self, sel: Selection) -> str:
        return self.con.execute(
            f"SELECT r.sweep_name FROM runs r WHERE {sel.where} "  # nosec B608
            "ORDER BY r.id DESC, r.folder ASC LIMIT 1",
            sel.args,
        ).fetchone()[0]

    def by_sweep_name(self, sel: Selection, name: str) -> Selection:
        return sel.narrowed("r.sweep_name = ?", (name,), None)

    def by_sweep_ref(self, sel: Selection, ref: str) -> Selection:
        # compare._select_sweep's test: name prefix, `/ref` inside `/name`, label prefix, or
        # the DVC experiment's name (substr/instr: case-sensitive, no LIKE wildcards).
        cond = (
            "substr(r.sweep_name, 1, length(?)) = ? OR "
            "instr('/' || r.sweep_name, '/' || ?) > 0 OR "
            "substr(r.sweep_label, 1, length(?)) = ? OR r.sweep_exp = ?"
        )
        return sel.narrowed(cond, (ref,) * cond.count("?"), None)

    def folders(
        self,
        sel: Selection,
        order: str = "r.id, r.folder",
        limit: int | None = None,
        joins: str = "",
    ) -> list[str]:
        lim = f" LIMIT {int(limit)}" if limit else ""
        return [
            f
            for (f,) in self.con.execute(
                f"SELECT r.folder FROM runs r {joins} WHERE {sel.where} ORDER BY {order}{lim}",  # nosec B608
                sel.args,
            )
        ]

    # -- columns

    def columns(self, sel: Selection) -> tuple[list[str], bool, bool, list[str]]:
        """(varied config keys in config order, show code, show data, metric keys present)."""
        cand = sorted(
            (c, key)
            for (k, key), (c, is_cand) in self.cols.items()
            if k == "param" and is_cand and key != "task.name"
        )
        metric = sorted((key, c) for (k, key), (c, _) in self.cols.items() if k == "metric")
        # per task: [n runs, {col: [n, elo, ehi]}]
        tasks: dict[Any, list] = {}
        pseudo = [CODE_COL, DATA_COL]
        wanted = [c for c, _ in cand] + pseudo + [c for _, c in metric]
        if sel.gids is not None:
            stats = {}
            if sel.gids:
                marks = ",".join("?" * len(sel.gids))
                for g, c, n, elo, ehi in self.con.execute(
                    f"SELECT gid, col, n, elo, ehi FROM stats WHERE gid IN ({marks})",  # nosec B608
                    sel.gids,
                ):
                    stats.setdefault(g, {})[c] = (n, elo, ehi)
            for g in sel.gids:
                task, _, n = self.groups[g]
                t = tasks.setdefault(task, [0, {}])
                t[0] += n
                for c in wanted:
                    s = stats.get(g, {}).get(c)
                    if s:
                        _merge(t[1], c, *s)
        else:
            exprs = [
                "count(*)",
                "min(r.code_eq)",
                "max(r.code_eq)",
                "min(r.data_eq)",
                "max(r.data_eq)",
            ]
            exprs += [f"count(r.p{c}), min(r.p{c} >> 2), max(r.p{c} >> 2)" for c, _ in cand]
            exprs += [f"count(coalesce(r.m{c}, r.mc{c}))" for _, c in metric]
            for row in self.con.execute(
                f"SELECT r.task, {', '.join(exprs)} FROM runs r WHERE {sel.where} GROUP BY r.task",  # nosec B608
                sel.args,
            ):
                task, n, clo, chi, dlo, dhi, *rest = row
                t = tasks.setdefault(task, [0, {}])
                t[0] += n
                _merge(t[1], CODE_COL, n, clo, chi)
                _merge(t[1], DATA_COL, n, dlo, dhi)
                for i, (c, _) in enumerate(cand):
                    _merge(t[1], c, *rest[3 * i : 3 * i + 3])
                for i, (_, c) in enumerate(metric):
                    _merge(t[1], c, rest[3 * len(cand) + i], None, None)
        total = sum(t[0] for t in tasks.values())

        def merged(col: int) -> tuple[int, Any, Any]:
            n, lo, hi = 0, None, None
            for _, per in tasks.values():
                s = per.get(col)
                if s and s[0]:
                    n += s[0]
                    lo = s[1] if lo is None else min(lo, s[1])
                    hi = s[2] if hi is None else max(hi, s[2])
            return n, lo, hi

        varied = []
        for col, key in cand:
            within = False
            for n_task, per in tasks.values():
                s = per.get(col)
                if s and s[0] and (s[0] < n_task or s[1] != s[2]):
                    within = True
                    break
            n, lo, hi = merged(col)
            if within or (n == total and lo != hi):
                varied.append((col, key))
        show_code = merged(CODE_COL)[1] != merged(CODE_COL)[2]
        show_data = merged(DATA_COL)[1] != merged(DATA_COL)[2]
        metrics = [key for key, c in metric if merged(c)[0]]
        return self._config_order(sel, varied), show_code, show_data, metrics

    def _config_order(self, sel: Selection, varied: list[tuple[int, str]]) -> list[str]:
        """`varied` in the order compare.varied_keys gives: first appearance over the runs
        (oldest first), each run's keys in its config's order."""
        if not varied:
            return []
        layouts = {
            lid: json.loads(c) for lid, c in self.con.execute("SELECT lid, cols FROM layouts")
        }
        ordered = []
        for lid in layouts:  # few; each a walk of the (layout, id, folder) index
            first = self.con.execute(
                f"SELECT r.id, r.folder FROM runs r WHERE r.layout = ? AND ({sel.where}) "  # nosec B608
                "ORDER BY r.id, r.folder LIMIT 1",
                (lid, *sel.args),
            ).fetchone()
            if first is not None:
                ordered.append((first, lid))
        ordered.sort()
        position: dict[int, int] = {}
        for _, lid in ordered:
            for col in layouts[lid]:
                position.setdefault(col, len(position))
        return [key for col, key in sorted(varied, key=lambda v: position[v[0]])]

    def widths(self, sel: Selection, columns: Sequence[tuple[str, str]]) -> list[int] | None:
        """The longest cell of each column over `sel` (a missing cell is `-`), from the stats
        when `sel` is a union of groups; None otherwise (then measured by `text`)."""
        if sel.gids is None:
            return None
        fixed = {
            "run": W_RUN,
            "task": W_TASK,
            "sweep": W_SWEEP,
            "status": W_STATUS,
            "code": CODE_COL,
            "data": DATA_COL,
        }
        wanted = {}
        for kind, key in columns:
            wanted[(kind, key)] = (
                fixed.get(kind) or self.cols[("metric" if kind == "metric" else "param", key)][0]
            )
        cols = set(wanted.values())
        width = dict.fromkeys(cols, 0)
        count = dict.fromkeys(cols, 0)
        total = sum(self.groups[g][2] for g in sel.gids)
        if sel.gids:
            marks = ",".join("?" * len(sel.gids))
            for c, n, w in self.con.execute(
                f"SELECT col, n, w FROM stats WHERE gid IN ({marks})",  # nosec B608
                sel.gids,
            ):
                if c in cols:
                    width[c] = max(width[c], w)
                    count[c] += n
        # A run without the key shows `-`.
        return [max(width[c], 1 if count[c] < total else 0) for c in wanted.values()]

    # -- ordering

    def order_by(self, kind: str, key: str, desc: bool) -> tuple[str, str]:
        """(ORDER BY clause, joins) sorting like compare.sort_table: missing, null and NaN
        last either way; ties keep the oldest-first order."""
        d = " DESC" if desc else ""
        tail = "r.id, r.folder"
        if kind == "run":
            return f"r.id{d}, r.folder", ""
        fixed = {
            "task": "r.task",
            "status": "r.status",
            "sweep": "r.sweep_label",
            "code": "r.code_label",
            "data": "r.data_label",
        }
        if kind in fixed:
            col = fixed[kind]
            return f"({col} IS NULL), {col}{d}, {tail}", ""
        if kind == "metric":
            c = self.cols[("metric", key)][0]
            return f"(r.m{c} IS NULL), r.m{c}{d}, {tail}", ""
        c = self.cols[("param", key)][0]
        join = f"LEFT JOIN vals sv ON sv.vid = r.p{c}"
        return f"(sv.srank IS NULL), sv.srank{d}, sv.snum{d}, sv.stxt{d}, {tail}", join

    # -- rendering

    def _cells(self, columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """(cell SQL, JSON SQL) per column; a missing cell is NULL."""
        fixed = {
            "run": ("r.id_cell", "r.id_json"),
            "task": ("r.task_cell", "r.task_json"),
            "sweep": ("r.sweep_cell", "r.sweep_json"),
            "status": ("r.status_cell", "r.status_json"),
            "code": ("r.code_cell", "r.code_json"),
            "data": ("r.data_cell", "r.data_json"),
        }
        out = []
        for kind, key in columns:
            if kind in fixed:
                out.append(fixed[kind])
            elif kind == "metric":
                c = self.cols[("metric", key)][0]
                out.append((f"r.mc{c}", f"r.mj{c}"))
            else:
                c = self.cols[("param", key)][0]
                out.append((f"r.c{c}", f"r.j{c}"))
        return out

    def _rows(
        self,
        sel: Selection,
        expr: str,
        expr_args: tuple,
        order: tuple[str, str],
        limit: int | None,
    ) -> list[str]:
        """`expr` (SQL over `runs r`) of the displayed rows, in display order.

        Oldest first is the table's own order (one scan). Any other order is found first on
        the sort keys alone, then the rows are fetched and put in that order here: SQLite would
        otherwise sort the whole rendered rows."""
        clause, joins = order
        lim = f" LIMIT {int(limit)}" if limit else ""
        if clause == DEFAULT_ORDER[0]:
            sql = f"SELECT {expr} FROM runs r WHERE {sel.where} ORDER BY {clause}{lim}"  # nosec B608
            return [r for (r,) in self.con.execute(sql, (*expr_args, *sel.args))]
        folders = self.folders(sel, clause, limit, joins)
        if limit:
            sql = (
                f"SELECT r.folder, {expr} FROM runs r "  # nosec B608
                "WHERE r.folder IN (SELECT value FROM json_each(?))"
            )
            args = (*expr_args, json.dumps(folders))
        else:
            sql = f"SELECT r.folder, {expr} FROM runs r WHERE {sel.where}"  # nosec B608
            args = (*expr_args, *sel.args)
        found = dict(self.con.execute(sql, args).fetchall())
        return [found[f] for f in folders]

    def text(
        self,
        sel: Selection,
        columns: Sequence[tuple[str, str]],
        headers: Sequence[str],
        order: tuple[str, str],
        limit: int | None,
    ) -> str:
        """The table as compare.format_table prints it."""
        cells = [c for c, _ in self._cells(columns)]
        measured = ", ".join(f"max(length(ifnull({c}, '-')))" for c in cells)
        if limit:
            clause, joins = order
            shown = self.folders(sel, clause, limit, joins)
            row = self.con.execute(
                f"SELECT count(*), {measured} FROM runs r "  # nosec B608
                "WHERE r.folder IN (SELECT value FROM json_each(?))",
                (json.dumps(shown),),
            ).fetchone()
            n, lengths = row[0], row[1:]
        else:
            lengths = self.widths(sel, columns)
            if lengths is None:
                row = self.con.execute(
                    f"SELECT count(*), {measured} FROM runs r WHERE {sel.where}",  # nosec B608
                    sel.args,
                ).fetchone()
                n, lengths = row[0], row[1:]
            else:
                n = self.count(sel)
        widths = [max(len(h), w or 0) for h, w in zip(headers, lengths, strict=True)]
        header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
        if not n:
            return header
        parts = []
        for i in range(0, len(cells), PRINTF_CHUNK):
            chunk = list(zip(cells, widths, strict=True))[i : i + PRINTF_CHUNK]
            fmt = "  ".join(f"%!-{w}s" for _, w in chunk)
            if i:
                fmt = "  " + fmt
            args = ", ".join(f"ifnull({c}, '-')" for c, _ in chunk)
            parts.append(f"printf('{fmt}', {args})")
        line = f"rtrim({' || '.join(parts)}, ?)"
        return "\n".join([header, *self._rows(sel, line, (WHITESPACE,), order, limit)])

    def json_rows(
        self,
        sel: Selection,
        columns: Sequence[tuple[str, str]],
        keys: Sequence[str],
        order: tuple[str, str],
        limit: int | None,
    ) -> str:
        """The rows as compare.table_json prints them (indent=2, missing values left out)."""
        jsons = [j for _, j in self._cells(columns)]
        parts, args = [], []
        for i, (key, j) in enumerate(zip(keys, jsons, strict=True)):
            lead = "  {\n    " if i == 0 else ",\n    "
            parts.append(f"(? || {j})")
            args.append(f"{lead}{json.dumps(key)}: ")
        exprs = []
        for i in range(0, len(parts), PRINTF_CHUNK):
            chunk = parts[i : i + PRINTF_CHUNK]
            exprs.append(f"printf('{'%s' * len(chunk)}', {', '.join(chunk)})")
        expr = f"{' || '.join(exprs)} || ?"
        rows = self._rows(sel, expr, (*args, "\n  }"), order, limit)
        if not rows:
            return "[]"
        return "[\n" + ",\n".join(rows) + "\n]"


def _merge(per: dict, col: int, n: int, lo: Any, hi: Any) -> None:
    if not n:
        return
    s = per.get(col)
    if s is None:
        per[col] = [n, lo, hi]
        return
    s[0] += n
    if lo is not None:
        s[1] = lo if s[1] is None else min(s[1], lo)
        s[2] = hi if s[2] is None else max(s[2], hi)


def open_synced(store_path: Path, on_bad: Callable[[BadRecordError], None] | None) -> RunIndex:
    """The store's index, brought up to date, with the bad records passed to `on_bad`;
    IndexUnavailable when it cannot be used."""
    index = RunIndex(store_path)
    try:
        index.open()
        index.sync()
    except sqlite3.Error as e:
        index.close()
        raise IndexUnavailable(f"{index.file}: {e}") from e
    except OSError as e:
        index.close()
        raise IndexUnavailable(f"{index.file}: {e}") from e
    if on_bad is not None:
        for error in index.bad_records():
            on_bad(error)
    return index


def open_quiet(store_path: Path) -> RunIndex | None:
    """The store's index brought up to date, or None (no store folder, index unusable,
    LIVEML_RUN_INDEX=off); for lookups that fall back to a listing silently."""
    if not enabled() or not Path(store_path).is_dir():
        return None
    try:
        return open_synced(Path(store_path), None)
    except IndexUnavailable:
        return None


def enabled() -> bool:
    """False when LIVEML_RUN_INDEX is off (0/off/no/false): read the run.json files."""
    return os.environ.get("LIVEML_RUN_INDEX", "").lower() not in ("0", "off", "no", "false")


def warn_unavailable(error: Exception) -> None:
    print(
        f"liveml: warning: run index not used ({error}); reading every run.json instead",
        file=sys.stderr,
        flush=True,
    )


def add_published(store_path: Path, folder: Path, record_bytes: bytes | None = None) -> None:
    """The writer's half: index a folder `RunStore.save` just published, when the store has an
    index (never building one); a busy or unusable index is left to the next reader's sync."""
    file = index_path(store_path)
    if not file.is_file():
        return
    index = RunIndex(store_path)
    try:
        index.open(create=False, timeout=WRITER_TIMEOUT_S)
        record = None
        if record_bytes is not None:
            with contextlib.suppress(ValueError, RecursionError):
                record = json.loads(record_bytes)
            if record is not None:
                from liveml.tracking.runs import record_problem

                if record_problem(record):
                    record = None
        index.add(folder, record)
    except (sqlite3.Error, OSError, IndexUnavailable):
        pass  # the next reader's sync indexes it (the folder's rename changed the gate)
    finally:
        index.close()
