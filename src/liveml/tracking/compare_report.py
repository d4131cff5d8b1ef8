"""The HTML report of `liveml compare --html`: one self-contained file (plotly.js inlined, the
runs embedded as JSON), so it opens on machines without network and can be attached anywhere.

The page shows the comparison table, metric-vs-param scatters, parallel coordinates, learning
curves from each run's metrics.csv, and a diff of any two runs computed in the browser.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import time
from collections import Counter
from importlib import resources
from itertools import combinations, pairwise
from pathlib import Path

from liveml.core.atomic import atomic_write_text
from liveml.tracking.compare import Run, Table, git_between, json_safe, run_git, warn
from liveml.tracking.lineage import commit_problem

TEMPLATE = "compare_report.html"
METRICS_CSV = "metrics.csv"
# Points per run and metric in the learning curves: enough for the shape, light for the page.
MAX_POINTS = 500
# git log/stat pairs precomputed for the diff section (each costs two git calls).
MAX_GIT_PAIRS = 20


def write_report(
    path: str | Path, table: Table, repo: str | Path | None = None, title: str | None = None
) -> Path:
    """Write the report of `table`'s runs to `path` atomically; returns the path."""
    atomic_write_text(path, render_report(table, repo=repo, title=title))
    return Path(path)


def render_report(table: Table, repo: str | Path | None = None, title: str | None = None) -> str:
    """The report as one HTML string."""
    from plotly.offline import get_plotlyjs

    title = title or f"liveml compare: {len(table.rows)} runs"
    data = report_data(table, repo=repo, title=title)
    parts = {
        "TITLE": html.escape(title),
        "DATA": embed_json(data),
        "PLOTLY_JS": get_plotlyjs(),
    }
    template = resources.files("liveml.tracking").joinpath(TEMPLATE).read_text(encoding="utf-8")
    # One pass over the template only: a marker inside the inserted texts is never expanded.
    return re.sub(r"\{\{(TITLE|DATA|PLOTLY_JS)\}\}", lambda m: parts[m.group(1)], template)


def embed_json(obj) -> str:
    """JSON safe inside <script>: strict (no NaN), and `<` escaped so no `</script>` or
    `<!--` in a value can end the element early."""
    return json.dumps(json_safe(obj), allow_nan=False, separators=(",", ":")).replace(
        "<", "\\u003c"
    )


def report_data(table: Table, repo: str | Path | None = None, title: str = "") -> dict:
    """Everything the page draws: the table, each run's flat config/code/data, curves, git."""
    metrics = table.of_kind("metric")
    headline = headline_metric(table.runs, metrics)
    return {
        "title": title,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "columns": [{"key": c.key, "kind": c.kind} for c in table.columns],
        "rows": [{k: row[k] for k in table.keys if k in row} for row in table.rows],
        "params": table.of_kind("param"),
        "metrics": metrics,
        "headline": headline,
        "default_metric": (headline or {}).get("metric")
        or next((m for m in metrics if m.startswith("val/")), None)
        or (metrics[0] if metrics else None),
        "runs": {
            r.id: {
                "config": r.flat,
                "code": r.record.get("code") or {},
                "data": r.record.get("data") or {},
            }
            for r in table.runs
        },
        "curves": {r.id: read_curves(r.folder / METRICS_CSV, metrics) for r in table.runs},
        "git": git_pairs(table.runs, repo),
    }


def headline_metric(runs: list[Run], metrics: list[str]) -> dict | None:
    """{"metric", "higher_is_better"} of the headline metric of the runs' most common task (the
    task contract's `headline`), as the runs log it: `val/<name>`, `<name>` or `<split>/<name>`;
    None when no task of the runs is installed or none logs its headline metric."""
    from liveml.core.errors import ConfigError
    from liveml.tasks import get_task

    for name, _ in Counter(r.task for r in runs if r.task).most_common():
        try:
            headline = get_task(name).headline
        except (ConfigError, ImportError, AttributeError):
            continue  # a task of another project, or one that no longer loads: no headline
        found = next(
            (m for m in (f"val/{headline.metric}", headline.metric) if m in metrics), None
        ) or next((m for m in metrics if m.rsplit("/", 1)[-1] == headline.metric), None)
        if found:
            return {"metric": found, "higher_is_better": headline.higher_is_better}
    return None


def read_curves(path: Path, metrics: list[str]) -> dict[str, list[list[float]]]:
    """{metric: [steps, values]} from a metrics.csv (empty cells skipped), each downsampled
    to MAX_POINTS; {} when the run has no metrics.csv or it is unreadable (with a warning)."""
    if not path.is_file():
        return {}
    try:
        points = _read_points(path, metrics)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        warn(f"skipping the learning curves of {path}: unreadable ({e})")
        return {}
    out = {}
    for m, pts in points.items():
        if pts:
            pts = downsample(pts, MAX_POINTS)
            out[m] = [[p[0] for p in pts], [float(f"{p[1]:.6g}") for p in pts]]
    return out


def _read_points(path: Path, metrics: list[str]) -> dict[str, list[tuple[int, float]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        cols = {m: header.index(m) for m in metrics if m in header}
        step_col = header.index("step") if "step" in header else None
        points: dict[str, list[tuple[int, float]]] = {m: [] for m in cols}
        for n, row in enumerate(reader):
            step = _number(row, step_col)
            step = n if step is None else int(step)
            for m, i in cols.items():
                value = _number(row, i)
                if value is not None:
                    points[m].append((step, value))
    return points


def _number(row: list[str], i: int | None) -> float | None:
    """Cell `i` as a finite float; None when empty, missing or not a number (a torn last line
    of a run that was killed, `nan` of a diverged one)."""
    try:
        value = float(row[i]) if i is not None and i < len(row) and row[i] else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def downsample(points: list, n: int) -> list:
    """`n` evenly spaced points, always keeping the first and the last."""
    if len(points) <= n:
        return points
    last = len(points) - 1
    return [points[round(i * last / (n - 1))] for i in range(n)]


def git_pairs(runs: list[Run], repo: str | Path | None) -> dict[str, dict]:
    """git log/stat for pairs of the runs' distinct commits, keyed `<commit>..<commit>`:
    consecutive commits first (the usual comparison), at most MAX_GIT_PAIRS in all. A recorded
    commit that is not a commit hash is left out (with a warning): it never reaches git."""
    commits = []
    for r in runs:
        commit = (r.record.get("code") or {}).get("commit")
        if problem := commit_problem(commit):
            warn(f"run {r.id}: {problem}; left out of the report's git log/diff")
        elif commit and commit not in commits:
            commits.append(commit)
    if repo is None or run_git(repo, "rev-parse", "--git-dir") is None:
        return {}
    pairs = list(pairwise(commits))[:MAX_GIT_PAIRS]
    for pair in combinations(commits, 2):
        if len(pairs) >= MAX_GIT_PAIRS:
            break
        if pair not in pairs:
            pairs.append(pair)
    out = {}
    for a, b in pairs:
        found = git_between(repo, a, b)
        if found:
            out[f"{a}..{b}"] = found
    return out
