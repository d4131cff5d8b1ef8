"""The HTML page of `liveml monitor`: one self-contained file (plotly.js inlined, the monitor
summary embedded as JSON), so it opens from file:// on a machine without network. In the task's
report folder, where a report is written every few minutes, the pages share one copy of
plotly.js instead (`shared_plotly`, `plotly_src`): 4.8 MB once, not per report.

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


PLOTLY_ELEMENT = "<script>{{PLOTLY_JS}}</script>"
SCRIPT_POLICY = "script-src 'unsafe-inline'"


def shared_plotly(folder: str | Path) -> Path:
    """`folder/plotly-<version>.min.js`, written (atomically) unless already there: the copy of
    plotly.js the reports in `folder`'s subfolders load (`plotly_src="../<name>"`)."""
    import plotly
    from plotly.offline import get_plotlyjs

    path = Path(folder) / f"plotly-{plotly.__version__}.min.js"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, get_plotlyjs())
    return path


def write_html(summary: dict, path: str | Path, plotly_src: str | None = None) -> Path:
    """Write the drift page of a monitor `summary` to `path` atomically; returns the path."""
    atomic_write_text(path, render_html(summary, plotly_src))
    return Path(path)


def _plotly_link(src: str) -> str:
    """A script element loading plotly.js from `src`, and a note on the page when it fails."""
    import json

    shown = html.escape(src, quote=True)
    note = (
        f'<p id="plotly-missing" style="color:#b00;font-weight:bold">plotly.js did not load '
        f"from {shown}, the copy shared by the reports of this folder: open the report where "
        "liveml monitor wrote it, or copy that file next to its folder.</p>"
    )
    # A JS string literal that cannot end the script element early.
    literal = json.dumps(note).replace("</", "<\\/")
    return (
        f'<script src="{shown}"></script>'
        "<script>if (!window.Plotly) addEventListener('DOMContentLoaded', () => "
        f"document.body.insertAdjacentHTML('afterbegin', {literal}));</script>"
    )


def render_html(summary: dict, plotly_src: str | None = None) -> str:
    """The page as one HTML string; ValueError when `summary` is not a monitor summary.
    `plotly_src`: a relative URL to load plotly.js from instead of inlining it."""
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
        "PLOTLY_JS": get_plotlyjs() if plotly_src is None else "",
    }
    template = resources.files("liveml.monitoring").joinpath(TEMPLATE).read_text(encoding="utf-8")
    if plotly_src is not None:
        if PLOTLY_ELEMENT not in template:
            raise RuntimeError(f"{TEMPLATE} has no {PLOTLY_ELEMENT} to load plotly.js with")
        template = template.replace(PLOTLY_ELEMENT, _plotly_link(plotly_src), 1)
        # The page's policy allows inline scripts only: let it load the shared local file.
        if SCRIPT_POLICY not in template:
            raise RuntimeError(f"{TEMPLATE} has no `{SCRIPT_POLICY}` to let plotly.js load")
        template = template.replace(SCRIPT_POLICY, f"{SCRIPT_POLICY} file:", 1)
    # One pass over the template only: a marker inside the inserted texts is never expanded.
    return re.sub(r"\{\{(TITLE|DATA|PLOTLY_JS)\}\}", lambda m: parts[m.group(1)], template)
