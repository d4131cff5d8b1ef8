"""The HTML page of `liveml monitor`: one self-contained file (plotly.js inlined, the monitor
summary embedded as JSON), so it opens from file:// on a machine without network.

The page draws everything from the summary in the browser: the verdict per window, each
numeric feature's window quantiles against the reference band, histograms of a picked
window, -log10 adjusted p-values of every test, categorical shares and the confidence mean.
"""

from __future__ import annotations

import html
import re
from importlib import resources
from pathlib import Path

from liveml.core.atomic import atomic_write_text
from liveml.tracking.compare_report import embed_json

TEMPLATE = "drift_report.html"


def write_html(summary: dict, path: str | Path) -> Path:
    """Write the drift page of a monitor `summary` to `path` atomically; returns the path."""
    atomic_write_text(path, render_html(summary))
    return Path(path)


def render_html(summary: dict) -> str:
    """The page as one HTML string; ValueError when `summary` is not a monitor summary."""
    from plotly.offline import get_plotlyjs

    windows = summary.get("windows") if isinstance(summary, dict) else None
    if not isinstance(windows, list):
        raise ValueError(
            "not a monitor summary: expected a dict with a 'windows' list "
            "(pass the dict `liveml monitor` writes to summary.json)"
        )
    parts = {
        "TITLE": html.escape(f"liveml drift: {summary.get('task', '?')}"),
        "DATA": embed_json(summary),
        "PLOTLY_JS": get_plotlyjs(),
    }
    template = resources.files("liveml.monitoring").joinpath(TEMPLATE).read_text(encoding="utf-8")
    # One pass over the template only: a marker inside the inserted texts is never expanded.
    return re.sub(r"\{\{(TITLE|DATA|PLOTLY_JS)\}\}", lambda m: parts[m.group(1)], template)
