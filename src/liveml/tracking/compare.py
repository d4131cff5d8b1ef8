"""Offline comparison of runs from the local run store: which parameters a set of runs varied,
their final metrics side by side, and what changed between two runs (code, hyperparameters,
data).

A table over a whole store is answered from the store's SQLite index (liveml.tracking.index),
never by reading every run.json, so it stays within a second at 100,000 runs; runs named one by
one are read from their run.json. Never metrics.csv: the HTML report
(liveml.tracking.compare_report) reads the learning curves.

Records are data, not trusted input: bad ones are skipped with a warning (see
`liveml.tracking.runs`), and a recorded commit reaches git only if it is a commit hash.
"""

from __future__ import annotations

import fnmatch
import json
import math
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from liveml.tracking.lineage import canonical_json, commit_problem, is_commit
from liveml.tracking.runs import RECORD, BadRecordError, RunStore, read_record, warn_bad_record

# Config groups that say where files go or how to log, not what was trained.
EXCLUDED_GROUPS = ("paths", "logger")
# The data recipe: reported with the data hashes, not with the hyperparameters.
DATA_GROUP = "data"
FIXED_COLUMNS = ("run", "task", "sweep", "status")
MAX_CELL = 28
# Lines of `git log --oneline` kept in a diff; a long history says "N more".
MAX_LOG = 50


class CompareError(ValueError):
    """A selection or option the user fixes (unknown sweep, bad sort key): one line."""


class _Missing:
    """A key a run does not have (unlike None, which is a value)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class Run:
    """One run record and the folder holding it (for metrics.csv)."""

    record: dict
    folder: Path

    @property
    def id(self) -> str:
        return self.record.get("run_id") or self.folder.name

    @property
    def task(self) -> str | None:
        return self.record.get("task")

    @property
    def status(self) -> str:
        return self.record.get("status") or "finished"

    @cached_property
    def sweep(self) -> dict | None:
        return sweep_info(self.record)

    @cached_property
    def flat(self) -> dict[str, Any]:
        """The config as dotted keys, without paths.* and logger.*."""
        return flatten(self.record.get("config") or {}, exclude=EXCLUDED_GROUPS)


def load_runs(store: RunStore, refs: Sequence[str] = ()) -> Sequence[Run]:
    """The runs `refs` name (ids, id prefixes, run folders), or every run in the store; oldest
    first. A bad record in the store is skipped with a warning on stderr; one that `refs` names
    explicitly is an error (runs.BadRecordError).

    Every run of the store comes from its index (`liveml.tracking.index`): an `IndexedRuns`
    that `select`, `build_table`, `sort_table`, `format_table` and `table_json` answer with
    SQL, and that reads run.json files only when iterated. Without a usable index (or with
    LIVEML_RUN_INDEX=off) the run.json files are read, as for `refs`.
    """
    skipped = 0

    def skip(error) -> None:
        nonlocal skipped
        skipped += 1
        warn_bad_record(error)

    if refs:
        paths = dict.fromkeys(store.resolve(r).resolve() for r in refs)
        found = [(p, read_record(p)) for p in paths]
    else:
        indexed = IndexedRuns.open(store, on_bad=skip)
        if indexed is not None:
            if not len(indexed):
                raise _no_runs(store, skipped)
            return indexed
        found = store.records(on_bad=skip)
    if not found:
        raise _no_runs(store, skipped)
    runs = [Run(record, p.parent) for p, record in found]
    return sorted(runs, key=lambda r: r.id)


def _no_runs(store: RunStore, skipped: int) -> CompareError:
    bad = f" ({skipped} unusable run record(s) skipped, see the warnings above)" * bool(skipped)
    return CompareError(
        f"no runs in {store.path}{bad}; train one first with `dvc repro` or "
        "`python -m liveml.training` (or set LIVEML_ROOT to the project that has them)"
    )


def load_run(store: RunStore, ref: str) -> Run:
    """The run `ref` names; runs.BadRecordError when its record is unusable."""
    path = store.resolve(ref)
    return Run(read_record(path), path.parent)


def flatten(config: dict, prefix: str = "", exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Nested dicts as {"model.lr": 0.001, ...}; lists and empty dicts stay whole values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not prefix and key in exclude:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def sweep_info(record: dict) -> dict | None:
    """The record's sweep as {"name", "kind", "job", "experiment", "overrides"}, or None.

    Older records hold just the sweep folder as a string; newer ones a dict.
    """
    sweep = record.get("sweep")
    if not sweep:
        return None
    if isinstance(sweep, str):
        sweep = {"name": sweep}
    name = str(sweep.get("name") or "")
    kind = sweep.get("kind") or ("dvc" if name.startswith("dvc:") else "hydra")
    info = {
        "name": name,
        "kind": kind,
        "job": sweep.get("job"),
        "experiment": sweep.get("experiment"),
        "overrides": sweep.get("overrides") or {},
    }
    info["label"] = _sweep_label(info)
    return info


def _sweep_label(info: dict) -> str:
    """Short form for the table: the sweep folder's last part, `#job` for a Hydra job, and
    `/experiment` for a DVC experiment (e.g. `2026-11-25_10-00-00#3`, `dvc:ab12cd3/lumpy-oak`)."""
    label = info["name"].rstrip("/").rsplit("/", 1)[-1]
    if info["kind"] == "dvc" and info["experiment"]:
        label += f"/{info['experiment']}"
    elif info["job"] is not None:
        label += f"#{info['job']}"
    return label


def select(
    runs: list[Run], *, sweep: str | None = None, task: str | None = None, status: str | None = None
) -> list[Run]:
    """The runs of `task`, of the sweep `sweep` (its name or a prefix of it, a prefix of the
    short label, a DVC experiment name, or `last`: the newest run's sweep), with `status`."""
    if isinstance(runs, IndexedRuns):
        return runs.select(sweep=sweep, task=task, status=status)
    if task:
        kept = [r for r in runs if r.task == task]
        if not kept:
            raise CompareError(f"no run of task {task!r}; tasks: {_listing(r.task for r in runs)}")
        runs = kept
    if sweep:
        runs = _select_sweep(runs, sweep)
    if status:
        kept = [r for r in runs if r.status == status]
        if not kept:
            raise CompareError(
                f"no {status!r} run among the {len(runs)} selected; statuses: "
                f"{_listing(r.status for r in runs)}"
            )
        runs = kept
    return runs


def _select_sweep(runs: list[Run], ref: str) -> list[Run]:
    swept = [r for r in runs if r.sweep]
    if not swept:
        raise CompareError(
            "no run belongs to a sweep; start one with `python -m liveml.training -m key=a,b` "
            "or `dvc exp run --queue -S ...`"
        )
    if ref == "last":
        name = max(swept, key=lambda r: r.id).sweep["name"]
        return [r for r in swept if r.sweep["name"] == name]

    def matches(s: dict) -> bool:
        # `/ref` inside the name: an absolute sweep folder matches its project-relative path.
        return (
            s["name"].startswith(ref)
            or f"/{ref}" in f"/{s['name']}"
            or s["label"].startswith(ref)
            or s["experiment"] == ref
        )

    kept = [r for r in swept if matches(r.sweep)]
    if not kept:
        raise CompareError(
            f"no sweep matches {ref!r}; sweeps: {_listing(r.sweep['name'] for r in swept)} "
            "(or use --sweep last)"
        )
    return kept


def _listing(values: Iterable, limit: int = 12) -> str:
    distinct = sorted({str(v) for v in values})
    more = f" ... ({len(distinct)} in all)" if len(distinct) > limit else ""
    return ", ".join(distinct[:limit]) + more


# --- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    kind: str  # run, task, sweep, status, param, code, data, metric


@dataclass
class Table:
    """Columns and one row per run ({column key: raw value}; a missing value has no key)."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    runs: list[Run] = field(repr=False)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def of_kind(self, kind: str) -> list[str]:
        return [c.key for c in self.columns if c.kind == kind]

    def head(self, n: int) -> Table:
        return Table(self.columns, self.rows[:n], self.runs[:n])


def build_table(runs: Sequence[Run], metrics: Sequence[str] = ()) -> Table:
    """The runs' fixed columns, varied params, code/data when they differ, and final metrics
    (those matching the `metrics` globs, or all)."""
    if isinstance(runs, IndexedRuns):
        return runs.table(metrics)
    params = varied_keys(runs)
    show_code = len({canonical_json(r.record.get("code")) for r in runs}) > 1
    show_data = len({canonical_json(r.record.get("data")) for r in runs}) > 1
    every = sorted({k for r in runs for k in r.record.get("metrics") or {}})
    metric_keys = pick_metrics(every, metrics)
    columns = table_columns(params, show_code, show_data, metric_keys)
    rows = [table_row(run, params, show_code, show_data, metric_keys) for run in runs]
    return Table(columns, rows, list(runs))


def table_columns(
    params: Sequence[str], show_code: bool, show_data: bool, metric_keys: Sequence[str]
) -> list[Column]:
    columns = [Column(k, k) for k in FIXED_COLUMNS]
    columns += [Column(k, "param") for k in params]
    columns += [Column("code", "code")] * show_code + [Column("data", "data")] * show_data
    columns += [Column(k, "metric") for k in metric_keys]
    return columns


def table_row(
    run: Run,
    params: Sequence[str],
    show_code: bool,
    show_data: bool,
    metric_keys: Sequence[str],
) -> dict[str, Any]:
    """One run's row: {column key: raw value}, missing values left out."""
    row: dict[str, Any] = {"run": run.id, "task": run.task, "status": run.status}
    if run.sweep:
        row["sweep"] = run.sweep["label"]
    row.update((k, run.flat[k]) for k in params if k in run.flat)
    if show_code:
        row["code"] = code_label(run.record)
    if show_data:
        row["data"] = data_label(run.record)
    got = run.record.get("metrics") or {}
    row.update((k, got[k]) for k in metric_keys if k in got)
    return row


def varied_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs among the runs, in config order.

    Within a task a missing key counts as a value (a schema change is a change); across tasks
    only keys every run has count, so comparing two tasks does not list each one's whole model.
    """
    keys = dict.fromkeys(k for r in runs for k in r.flat)
    keys.pop("task.name", None)  # the task column
    by_task: dict[Any, list[dict]] = {}
    for r in runs:
        by_task.setdefault(r.task, []).append(r.flat)

    def differs(key: str, flats: list[dict]) -> bool:
        return len({_identity(f.get(key, MISSING)) for f in flats}) > 1

    flats = [r.flat for r in runs]
    return [
        k
        for k in keys
        if any(differs(k, g) for g in by_task.values())
        or (all(k in f for f in flats) and differs(k, flats))
    ]


def _identity(value: Any) -> Any:
    """A hashable stand-in that is equal iff the values are: 1 == 1.0, but True != 1."""
    if value is MISSING:
        return ("missing",)
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", float(value)) if not math.isnan(value) else ("nan",)
    if isinstance(value, str):
        return ("str", value)
    return ("json", canonical_json(value))


def pick_metrics(every: Sequence[str], globs: Sequence[str]) -> list[str]:
    """The metric keys matching any of `globs` (all of `every` without globs)."""
    if not globs:
        return list(every)
    kept = [k for k in every if any(fnmatch.fnmatchcase(k, g) for g in globs)]
    if not kept:
        raise CompareError(
            f"no metric matches {' '.join(globs)}; metrics: {_listing(every) or 'none'}"
        )
    return kept


def code_label(record: dict) -> str:
    """`<commit[:7]>`, plus `+<diff hash[:4]>` for uncommitted changes (which edit it was);
    `invalid` for a recorded commit that is not a commit hash."""
    code = record.get("code") or {}
    commit = code.get("commit")
    label = ("invalid" if not is_commit(commit) else commit[:7]) if commit else "no-git"
    if code.get("dirty"):
        label += "+" + str(code.get("diff_sha256") or "")[:4]
    return label


def data_label(record: dict) -> str | None:
    """The data hashes, shortened to 8 characters, comma-separated (usually one path)."""
    data = record.get("data") or {}
    return ",".join(str(h)[:8] for h in data.values()) or None


def sort_table(table: Table, key: str, desc: bool = False) -> Table:
    """Rows ordered by column `key`; rows missing it (or null, NaN) go last either way."""
    if isinstance(table, IndexedTable) and table.limit is None:
        return table.sorted(key, desc)
    if key not in table.keys:
        raise CompareError(f"cannot sort by {key!r}; sortable keys: {', '.join(table.keys)}")
    pairs = list(zip(table.rows, table.runs, strict=True))
    present = [p for p in pairs if not _absent(p[0].get(key))]
    absent = [p for p in pairs if _absent(p[0].get(key))]
    present.sort(key=lambda p: _sort_key(p[0][key]), reverse=desc)
    ordered = present + absent
    return Table(table.columns, [p[0] for p in ordered], [p[1] for p in ordered])


def _absent(value: Any) -> bool:
    """Missing, null or NaN (a diverged metric): sorted after every real value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> tuple:
    # Numbers before strings before anything else, so mixed columns still sort.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, canonical_json(value).decode())


def format_value(value: Any) -> str:
    """A cell as text: 4 significant digits for floats, compact JSON for lists."""
    if value is MISSING:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def format_table(table: Table) -> str:
    """The table as aligned text columns (long cells cut to MAX_CELL characters)."""
    if isinstance(table, IndexedTable):
        return table.text()
    header = table.keys
    cells = [[_cut(format_value(row.get(k, MISSING))) for k in header] for row in table.rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: strict JSON (browsers reject NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def table_json(table: Table) -> str:
    """The rows as a JSON list of {column: value} (missing values left out)."""
    if isinstance(table, IndexedTable):
        return table.json()
    rows = [{k: row[k] for k in table.keys if k in row} for row in table.rows]
    return json.dumps(json_safe(rows), indent=2)


# --- the same, answered by the store's index ---------------------------------------------


class IndexedRuns(Sequence[Run]):
    """Runs of a store selected in its SQLite index (`liveml.tracking.index`) in one read
    snapshot; the table functions above answer these with SQL. Iterating reads their run.json
    files (oldest first), like `load_runs` without an index."""

    def __init__(self, store: RunStore, index, query, sel):
        self.store, self.index, self.query, self.sel = store, index, query, sel
        self._runs: list[Run] | None = None

    @classmethod
    def open(cls, store: RunStore, on_bad) -> IndexedRuns | None:
        """Every run of `store` through its index (built or brought up to date first), or None
        when the store has no folder yet or the index cannot be used (a warning says why)."""
        from liveml.tracking import index as idx

        if not idx.enabled() or not store.path.is_dir():
            return None
        try:
            index = idx.open_synced(store.path, on_bad)
        except idx.IndexUnavailable as e:
            idx.warn_unavailable(e)
            return None
        index.con.execute("BEGIN")  # one snapshot for everything asked of these runs
        query = idx.Query(index)
        return cls(store, index, query, query.all())

    def _with(self, sel) -> IndexedRuns:
        return IndexedRuns(self.store, self.index, self.query, sel)

    def __len__(self) -> int:
        if self._runs is not None:
            return len(self._runs)
        return self.query.count(self.sel)

    def __getitem__(self, i):
        return self.materialize()[i]

    def __iter__(self):
        return iter(self.materialize())

    def materialize(self, folders: Sequence[str] | None = None) -> list[Run]:
        """Run objects read from the run folders (those of `folders`, in that order)."""
        if folders is None and self._runs is not None:
            return self._runs
        names = self.query.folders(self.sel) if folders is None else folders
        runs = []
        for name in names:
            path = self.store.path / name / RECORD
            try:
                runs.append(Run(read_record(path), path.parent))
            except BadRecordError as e:  # changed since it was indexed
                warn_bad_record(e)
        if folders is None:
            self._runs = runs
        return runs

    def select(
        self, *, sweep: str | None = None, task: str | None = None, status: str | None = None
    ) -> IndexedRuns:
        """`select` over the index: the same selection, the same errors."""
        q, sel = self.query, self.sel
        if task:
            kept = q.by_task(sel, task)
            if not q.count(kept):
                tasks = _listing(q.distinct(sel, "r.task"))
                raise CompareError(f"no run of task {task!r}; tasks: {tasks}")
            sel = kept
        if sweep:
            swept = q.swept(sel)
            if not q.count(swept):
                raise CompareError(
                    "no run belongs to a sweep; start one with `python -m liveml.training -m "
                    "key=a,b` or `dvc exp run --queue -S ...`"
                )
            if sweep == "last":
                sel = q.by_sweep_name(swept, q.last_sweep(swept))
            else:
                kept = q.by_sweep_ref(swept, sweep)
                if not q.count(kept):
                    names = _listing(q.distinct(swept, "r.sweep_name"))
                    raise CompareError(
                        f"no sweep matches {sweep!r}; sweeps: {names} (or use --sweep last)"
                    )
                sel = kept
        if status:
            kept = q.by_status(sel, status)
            if not q.count(kept):
                raise CompareError(
                    f"no {status!r} run among the {q.count(sel)} selected; statuses: "
                    f"{_listing(q.distinct(sel, 'r.status'))}"
                )
            sel = kept
        return self._with(sel)

    def table(self, metrics: Sequence[str] = ()) -> IndexedTable:
        params, show_code, show_data, every = self.query.columns(self.sel)
        columns = table_columns(params, show_code, show_data, pick_metrics(every, metrics))
        return IndexedTable(columns, self)


class IndexedTable(Table):
    """A `Table` of indexed runs: sorting, `head`, `format_table` and `table_json` run as
    SQL over the index; `rows` and `runs` read the run.json files when first asked for."""

    def __init__(self, columns: list[Column], source: IndexedRuns, order=None, limit=None):
        self.columns = columns
        self.source = source
        self.order = order  # (key, desc) or None: oldest first
        self.limit = limit
        self._cache: tuple[list[dict], list[Run]] | None = None

    def __repr__(self) -> str:
        return f"IndexedTable({self.keys}, order={self.order}, limit={self.limit})"

    def _copy(self, order=None, limit=None) -> IndexedTable:
        return IndexedTable(self.columns, self.source, order, limit)

    def head(self, n: int) -> IndexedTable:
        return self._copy(self.order, n if self.limit is None else min(n, self.limit))

    def sorted(self, key: str, desc: bool = False) -> IndexedTable:
        if key not in self.keys:
            raise CompareError(f"cannot sort by {key!r}; sortable keys: {', '.join(self.keys)}")
        return self._copy((key, desc), self.limit)

    def _order(self) -> tuple[str, str]:
        if self.order is None:
            from liveml.tracking.index import DEFAULT_ORDER

            return DEFAULT_ORDER
        key, desc = self.order
        kind = next(c.kind for c in self.columns if c.key == key)
        return self.source.query.order_by(kind, key, desc)

    def _spec(self) -> list[tuple[str, str]]:
        return [(c.kind, c.key) for c in self.columns]

    def text(self) -> str:
        q = self.source.query
        return q.text(self.source.sel, self._spec(), self.keys, self._order(), self.limit)

    def json(self) -> str:
        q = self.source.query
        return q.json_rows(self.source.sel, self._spec(), self.keys, self._order(), self.limit)

    def _materialize(self) -> tuple[list[dict], list[Run]]:
        if self._cache is None:
            clause, joins = self._order()
            q = self.source.query
            folders = q.folders(self.source.sel, clause, self.limit, joins)
            runs = self.source.materialize(folders)
            params = self.of_kind("param")
            metrics = self.of_kind("metric")
            show_code, show_data = "code" in self.keys, "data" in self.keys
            rows = [table_row(r, params, show_code, show_data, metrics) for r in runs]
            self._cache = (rows, runs)
        return self._cache

    @property
    def rows(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self._materialize()[0]

    @property
    def runs(self) -> list[Run]:  # type: ignore[override]
        return self._materialize()[1]


# --- the diff of two runs -----------------------------------------------------------------


def diff_runs(a: Run | dict, b: Run | dict, repo: str | Path | None = None) -> dict:
    """What changed from run `a` to run `b` (Runs or run records): code, hyperparameters
    (config without paths.*, logger.*, data.*), data (hashes and the data.* recipe).

    With `repo` (a git work tree holding both commits), the code section also has
    `git log --oneline A..B` and `git diff --stat A B`; git failing just leaves them out.
    """
    a, b = (r if isinstance(r, Run) else Run(r, Path(r.get("run_id") or "")) for r in (a, b))
    hyper_a = {k: v for k, v in a.flat.items() if not _in_group(k, DATA_GROUP)}
    hyper_b = {k: v for k, v in b.flat.items() if not _in_group(k, DATA_GROUP)}
    recipe_a = {k: v for k, v in a.flat.items() if _in_group(k, DATA_GROUP)}
    recipe_b = {k: v for k, v in b.flat.items() if _in_group(k, DATA_GROUP)}
    code = code_diff(a.record.get("code") or {}, b.record.get("code") or {}, repo)
    data_a, data_b = a.record.get("data") or {}, b.record.get("data") or {}
    hashes = [
        {"path": p, "a": data_a.get(p), "b": data_b.get(p)}
        for p in dict.fromkeys([*data_a, *data_b])
        if data_a.get(p) != data_b.get(p)
    ]
    recipe = dict_diff(recipe_a, recipe_b)
    return {
        "a": a.id,
        "b": b.id,
        "code": code,
        "hyperparameters": dict_diff(hyper_a, hyper_b),
        "data": {
            "changed": bool(hashes) or _any_change(recipe),
            "hashes": hashes,
            "recipe": recipe,
        },
    }


def _in_group(key: str, group: str) -> bool:
    return key == group or key.startswith(group + ".")


def dict_diff(a: dict[str, Any], b: dict[str, Any]) -> dict:
    """Keys whose values differ, and keys only in one of two flat dicts."""
    changed = [
        {"key": k, "a": a[k], "b": b[k]} for k in a if k in b and _identity(a[k]) != _identity(b[k])
    ]
    return {
        "changed": changed,
        "only_a": {k: v for k, v in a.items() if k not in b},
        "only_b": {k: v for k, v in b.items() if k not in a},
    }


def _any_change(d: dict) -> bool:
    return bool(d["changed"] or d["only_a"] or d["only_b"])


def code_diff(a: dict, b: dict, repo: str | Path | None = None) -> dict:
    """Commit and uncommitted-change hash of both runs, plus git's log/stat between commits.

    A recorded commit that is not a commit hash is never passed to git; `invalid` then says
    which run's commit is unusable and why.
    """
    keys = ("commit", "dirty", "diff_sha256")
    out: dict[str, Any] = {
        "changed": any(a.get(k) != b.get(k) for k in keys),
        "a": {k: a.get(k) for k in keys},
        "b": {k: b.get(k) for k in keys},
    }
    invalid = [
        f"{side}: {problem}; not passed to git"
        for side, code in (("A", a), ("B", b))
        if (problem := commit_problem(code.get("commit")))
    ]
    if invalid:
        out["invalid"] = invalid
    ca, cb = a.get("commit"), b.get("commit")
    if repo is not None and is_commit(ca) and is_commit(cb) and ca != cb:
        out.update(git_between(repo, ca, cb))
    return out


def git_between(repo: str | Path, a: str, b: str) -> dict:
    """{"log_range", "log", "stat"} of commits `a` and `b`, or {} when git cannot tell (or
    either is not a commit hash: a record's value is never handed to git unchecked).

    The log is `a..b`, or `b..a` when b is older (the range would be empty).
    """
    if not (is_commit(a) and is_commit(b)):
        return {}
    log_range = f"{a[:7]}..{b[:7]}"
    # --end-of-options and `--`: revisions are never read as options, nor as paths.
    log = run_git(repo, "log", "--oneline", "--end-of-options", f"{a}..{b}", "--")
    if log is not None and not log.strip():
        back = run_git(repo, "log", "--oneline", "--end-of-options", f"{b}..{a}", "--")
        if back and back.strip():
            log, log_range = back, f"{b[:7]}..{a[:7]}"
    stat = run_git(repo, "diff", "--stat", "--end-of-options", a, b, "--")
    if log is None or stat is None:
        return {}
    lines = log.splitlines()
    if len(lines) > MAX_LOG:
        lines = [*lines[:MAX_LOG], f"... {len(lines) - MAX_LOG} more"]
    return {"log_range": log_range, "log": lines, "stat": stat.rstrip()}


def run_git(repo: str | Path, *args: str) -> str | None:
    """stdout of `git ARGS` in `repo`, or None when git is missing or fails. Callers separate
    options from revisions (`--end-of-options`) and check revisions with `is_commit`."""
    try:
        out = subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def format_diff(diff: dict) -> str:
    """Three sections (code, hyperparameters, data), each "unchanged" or what changed."""
    lines = [f"diff  A = {diff['a']}  B = {diff['b']}", ""]
    code = diff["code"]
    lines.append("code: " + ("" if code["changed"] else "unchanged"))
    lines += [f"  invalid commit in {line}" for line in code.get("invalid", [])]
    if code["changed"]:
        ca, cb = code["a"], code["b"]
        lines.append(f"  commit  {_commit_text(ca['commit'])} -> {_commit_text(cb['commit'])}")
        if (ca["dirty"], ca["diff_sha256"]) != (cb["dirty"], cb["diff_sha256"]):
            lines.append(f"  uncommitted changes  {_dirty(ca)} -> {_dirty(cb)}")
        if "log" in code:
            lines.append(f"  git log --oneline {code['log_range']}:")
            lines += [f"    {line}" for line in code["log"]] or ["    (no commits)"]
            lines.append("  git diff --stat:")
            lines += [f"    {line}" for line in code["stat"].splitlines()] or ["    (no changes)"]
    lines.append("")
    lines.append(
        "hyperparameters: " + ("" if _any_change(diff["hyperparameters"]) else "unchanged")
    )
    lines += _format_dict_diff(diff["hyperparameters"])
    lines.append("")
    data = diff["data"]
    lines.append("data: " + ("" if data["changed"] else "unchanged"))
    for h in data["hashes"]:
        lines.append(f"  {h['path']}  {h['a'] or '-'} -> {h['b'] or '-'}")
    lines += _format_dict_diff(data["recipe"])
    return "\n".join(line.rstrip() for line in lines)


def _commit_text(commit: Any) -> str:
    """A commit for the terminal: hashes as they are; anything else quoted (no raw escapes)."""
    if not commit:
        return "not in git"
    if is_commit(commit):
        return commit
    shown = repr(commit)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def warn(message: str) -> None:
    """One warning line on stderr (stdout is the table or the JSON)."""
    print(f"liveml: warning: {message}", file=sys.stderr, flush=True)


def _dirty(code: dict) -> str:
    if code["dirty"]:
        return f"yes ({str(code['diff_sha256'])[:12]})"
    return "none" if code["dirty"] is False else "unknown"


def _format_dict_diff(d: dict) -> list[str]:
    lines = [
        f"  {c['key']}  {format_value(c['a'])} -> {format_value(c['b'])}" for c in d["changed"]
    ]
    lines += [f"  only in A: {k} = {format_value(v)}" for k, v in d["only_a"].items()]
    lines += [f"  only in B: {k} = {format_value(v)}" for k, v in d["only_b"].items()]
    return lines
