"""Offline comparison of runs from the local run store: which parameters a set of runs varied,
their final metrics side by side, and what changed between two runs (code, hyperparameters,
data).

Only run.json files are read here (never metrics.csv), so a table over hundreds of runs stays
instant; the HTML report (liveml.tracking.compare_report) reads the learning curves.
"""

from __future__ import annotations

import fnmatch
import json
import math
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from liveml.tracking.lineage import canonical_json
from liveml.tracking.runs import RECORD, RunStore

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


def load_runs(store: RunStore, refs: Sequence[str] = ()) -> list[Run]:
    """The runs `refs` name (ids, id prefixes, run folders), or every run in the store; oldest
    first. Reads run.json files only."""
    if refs:
        paths = {p.resolve(): None for p in (store.resolve(r) for r in refs)}
    else:
        paths = {store.path / i / RECORD: None for i in store.ids()}
    if not paths:
        raise CompareError(
            f"no runs in {store.path}; train one first with `dvc repro` or "
            "`python -m liveml.training` (or set LIVEML_ROOT to the project that has them)"
        )
    runs = [Run(json.loads(p.read_text()), p.parent) for p in paths]
    return sorted(runs, key=lambda r: r.id)


def load_run(store: RunStore, ref: str) -> Run:
    path = store.resolve(ref)
    return Run(json.loads(path.read_text()), path.parent)


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


def build_table(runs: list[Run], metrics: Sequence[str] = ()) -> Table:
    """The runs' fixed columns, varied params, code/data when they differ, and final metrics
    (those matching the `metrics` globs, or all)."""
    params = varied_keys(runs)
    show_code = len({canonical_json(r.record.get("code")) for r in runs}) > 1
    show_data = len({canonical_json(r.record.get("data")) for r in runs}) > 1
    metric_keys = _metric_keys(runs, metrics)

    columns = [Column(k, k) for k in FIXED_COLUMNS]
    columns += [Column(k, "param") for k in params]
    columns += [Column("code", "code")] * show_code + [Column("data", "data")] * show_data
    columns += [Column(k, "metric") for k in metric_keys]
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run": run.id,
            "task": run.task,
            "status": run.status,
        }
        if run.sweep:
            row["sweep"] = run.sweep["label"]
        row.update((k, run.flat[k]) for k in params if k in run.flat)
        if show_code:
            row["code"] = code_label(run.record)
        if show_data:
            row["data"] = data_label(run.record)
        got = run.record.get("metrics") or {}
        row.update((k, got[k]) for k in metric_keys if k in got)
        rows.append(row)
    return Table(columns, rows, list(runs))


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


def _metric_keys(runs: list[Run], globs: Sequence[str]) -> list[str]:
    every = sorted({k for r in runs for k in r.record.get("metrics") or {}})
    if not globs:
        return every
    kept = [k for k in every if any(fnmatch.fnmatchcase(k, g) for g in globs)]
    if not kept:
        raise CompareError(
            f"no metric matches {' '.join(globs)}; metrics: {_listing(every) or 'none'}"
        )
    return kept


def code_label(record: dict) -> str:
    """`<commit[:7]>`, plus `+<diff hash[:4]>` for uncommitted changes (which edit it was)."""
    code = record.get("code") or {}
    commit = code.get("commit")
    label = commit[:7] if commit else "no-git"
    if code.get("dirty"):
        label += "+" + str(code.get("diff_sha256") or "")[:4]
    return label


def data_label(record: dict) -> str | None:
    """The data hashes, shortened to 8 characters, comma-separated (usually one path)."""
    data = record.get("data") or {}
    return ",".join(str(h)[:8] for h in data.values()) or None


def sort_table(table: Table, key: str, desc: bool = False) -> Table:
    """Rows ordered by column `key`; rows missing it (or null, NaN) go last either way."""
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
    rows = [{k: row[k] for k in table.keys if k in row} for row in table.rows]
    return json.dumps(json_safe(rows), indent=2)


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
    """Commit and uncommitted-change hash of both runs, plus git's log/stat between commits."""
    keys = ("commit", "dirty", "diff_sha256")
    out: dict[str, Any] = {
        "changed": any(a.get(k) != b.get(k) for k in keys),
        "a": {k: a.get(k) for k in keys},
        "b": {k: b.get(k) for k in keys},
    }
    ca, cb = a.get("commit"), b.get("commit")
    if repo is not None and ca and cb and ca != cb:
        out.update(git_between(repo, ca, cb))
    return out


def git_between(repo: str | Path, a: str, b: str) -> dict:
    """{"log_range", "log", "stat"} of commits `a` and `b`, or {} when git cannot tell.

    The log is `a..b`, or `b..a` when b is older (the range would be empty).
    """
    log_range = f"{a[:7]}..{b[:7]}"
    log = run_git(repo, "log", "--oneline", f"{a}..{b}")
    if log is not None and not log.strip():
        back = run_git(repo, "log", "--oneline", f"{b}..{a}")
        if back and back.strip():
            log, log_range = back, f"{b[:7]}..{a[:7]}"
    stat = run_git(repo, "diff", "--stat", a, b)
    if log is None or stat is None:
        return {}
    lines = log.splitlines()
    if len(lines) > MAX_LOG:
        lines = [*lines[:MAX_LOG], f"... {len(lines) - MAX_LOG} more"]
    return {"log_range": log_range, "log": lines, "stat": stat.rstrip()}


def run_git(repo: str | Path, *args: str) -> str | None:
    """stdout of `git ARGS` in `repo`, or None when git is missing or fails."""
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
    if code["changed"]:
        ca, cb = code["a"], code["b"]
        lines.append(f"  commit  {ca['commit'] or 'not in git'} -> {cb['commit'] or 'not in git'}")
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
