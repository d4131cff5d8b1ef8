"""The HTML report of `liveml compare --html`, opened from disk in headless Chromium: it is
self-contained, every plot renders (parcoords through WebGL), and the diff selects work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liveml.tracking.compare import build_table, load_runs
from liveml.tracking.compare_report import MAX_POINTS, read_curves, render_report, write_report
from liveml.tracking.runs import RunStore

from browser import Browser
from runrecords import DATA_A, DATA_B, init_two_commits, make_record, save_runs

# A config value that would end the data <script> early if the JSON were not escaped.
HOSTILE = "</script><script>alert('escaped?')</script><!--"


@pytest.fixture(scope="module")
def commits(tmp_path_factory) -> tuple[Path, str, str]:
    """A git repo with two commits: (repo, first, second)."""
    return init_two_commits(tmp_path_factory.mktemp("git") / "repo")


@pytest.fixture(scope="module")
def report(tmp_path_factory, commits) -> Path:
    """The report of four runs: lr and model.name varied, one on new data, two commits."""
    repo, first, second = commits
    tmp = tmp_path_factory.mktemp("report")
    store = RunStore(tmp / "runs")
    records = []
    for i in range(4):
        r = make_record(
            f"20261125-0{i}0000-0000000{i}",
            lr=0.001 * (i + 1),
            commit=first if i < 2 else second,
            data_hash=DATA_B if i == 3 else DATA_A,
            metrics={"train/loss": 1.0 / (i + 1), "val/map": 0.1 * i, "val/map_50": 0.2 * i},
        )
        r["config"]["model"]["name"] = "fcos_tiny" if i % 2 else "fcos_wide"
        records.append(r)
    records[3]["config"]["model"]["note"] = HOSTILE
    save_runs(store, records, tmp)
    return write_report(tmp / "out" / "report.html", build_table(load_runs(store)), repo=repo)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module: starting it is the slow part."""
    with Browser(timeout=30) as b:
        yield b


@pytest.fixture
def page(browser, report):
    """The report freshly opened, once every plot has been drawn."""
    browser.open(report.as_uri())
    browser.wait_for("['ready', 'error'].includes(document.body.dataset.state)", timeout=60)
    return browser


def test_report_is_self_contained(report):
    text = report.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text, re.I)
    assert not re.search(r"<link[^>]*\bhref=[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"<(img|iframe)[^>]*\bsrc=[\"']?https?:", text, re.I)
    # plotly.js is inlined, and the embedded data cannot close its <script> element.
    assert "Plotly" in text and text.count("</script>") == 3
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    config = json.loads(data.group(1))["runs"]["20261125-030000-00000003"]["config"]
    assert config["model.note"] == HOSTILE


def test_page_renders_every_plot_without_errors(page):
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.console_errors == [] and page.dialogs == []
    # Nothing in the rendered page (plotly's modebar included) points off the machine.
    sources = page.evaluate(
        "[...document.querySelectorAll('[src], [href]')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))"
    )
    assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
    params = ["model.name", "model.lr", "model.note"]
    assert page.evaluate("DATA.params") == params
    assert page.evaluate("DATA.default_metric") == "val/map"
    # One scatter per varied param, then parcoords and curves: each drawn by plotly.
    ids = [f"plot-scatter-{i}" for i in range(len(params))] + ["plot-parcoords", "plot-curves"]
    for plot_id in ids:
        assert page.evaluate(f"document.querySelectorAll('#{plot_id} .main-svg').length") > 0
    # Parcoords: an axis per varied param plus the metric, and WebGL actually drew lines.
    titles = page.evaluate(
        "[...document.querySelectorAll('#plot-parcoords .axis-title')].map(t => t.textContent)"
    )
    assert titles == [*params, "val/map"]
    assert page.evaluate("document.getElementById('plot-parcoords').data[0].dimensions.length") == 4
    assert painted_pixels(page, "#plot-parcoords canvas.gl-canvas-context") > 100
    # Curves: one trace per run, from metrics.csv.
    traces = page.evaluate("document.getElementById('plot-curves').data.map(t => t.name)")
    assert traces == [f"20261125-0{i}0000-0000000{i}" for i in range(4)]


def painted_pixels(page, selector: str) -> int:
    """Non-transparent pixels of a (WebGL) canvas, read through a 2D canvas."""
    return page.evaluate(
        f"""(() => {{
          const src = document.querySelector({json.dumps(selector)});
          const c = Object.assign(document.createElement('canvas'),
                                  {{width: src.width, height: src.height}});
          const ctx = c.getContext('2d');
          ctx.drawImage(src, 0, 0);
          const px = ctx.getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
          return n;
        }})()"""
    )


def test_metric_select_redraws_and_headers_sort(page):
    page.evaluate(
        "(s => { s.value = 'train/loss'; s.dispatchEvent(new Event('change')); })"
        "(document.getElementById('metric'))"
    )
    page.wait_for("document.body.dataset.state === 'ready'")
    curves_axis = "document.getElementById('plot-curves').layout.yaxis.title.text"
    assert page.evaluate(curves_axis) == "train/loss"
    dims = page.evaluate(
        "document.getElementById('plot-parcoords').data[0].dimensions.map(d => d.label)"
    )
    assert dims[-1] == "train/loss"

    first_cells = (
        "[...document.querySelectorAll('#runs tbody tr')].map(tr => tr.cells[0].textContent)"
    )
    headers = "[...document.querySelectorAll('#runs th')]"
    page.evaluate(f"{headers}.find(th => th.textContent === 'val/map_50').click()")
    assert page.evaluate(first_cells)[0].endswith("00")
    page.evaluate("document.querySelector('#runs th[data-sort]').click()")  # again: descending
    assert page.evaluate(first_cells)[0].endswith("03")
    assert page.console_errors == []


def choose_diff(page, a: str, b: str) -> None:
    page.evaluate(
        f"for (const [id, v] of [['diff-a', '{a}'], ['diff-b', '{b}']]) {{"
        " const s = document.getElementById(id); s.value = v;"
        " s.dispatchEvent(new Event('change')); } 0"
    )


def diff_part(page, part: str) -> str:
    return page.evaluate(f"document.querySelector('#diff [data-part={part}]').innerText")


def test_diff_selects_show_what_changed(page, commits):
    _, first, second = commits
    choose_diff(page, "20261125-000000-00000000", "20261125-030000-00000003")
    keys = page.evaluate(
        "[...document.querySelectorAll('#diff [data-part=hyperparameters] tr[data-key]')]"
        ".map(tr => tr.dataset.key)"
    )
    assert keys == ["model.name", "model.lr", "model.note"]
    data = diff_part(page, "data")
    assert "data/defects/raw" in data and DATA_B in data
    code = diff_part(page, "code")
    assert first in code and second in code
    # The git log/stat precomputed for this commit pair is shown.
    assert "raise the learning rate" in code and "train.py" in code

    choose_diff(page, "20261125-000000-00000000", "20261125-010000-00000001")
    assert diff_part(page, "code").endswith("unchanged")
    assert diff_part(page, "data").endswith("unchanged")
    assert "model.lr" in diff_part(page, "hyperparameters")
    assert page.console_errors == [] and page.dialogs == []


def test_curves_are_downsampled_and_the_csv_gaps_skipped(tmp_path):
    csv = tmp_path / "metrics.csv"
    rows = [f"{s},{s // 100},{1 / (s + 1)},{'0.5' if s % 100 == 99 else ''}" for s in range(2000)]
    rows += ["2000,20,nan,0.5", "2001,20,oops"]  # a diverged step, a torn last line
    csv.write_text("step,epoch,train/loss,val/map\n" + "\n".join(rows) + "\n")
    curves = read_curves(csv, ["train/loss", "val/map", "val/absent"])
    steps, values = curves["train/loss"]
    assert len(steps) == len(values) == MAX_POINTS
    assert steps[0] == 0 and steps[-1] == 1999 and values[0] == 1.0
    assert curves["val/map"] == [[*range(99, 2000, 100), 2000], [0.5] * 21]
    assert "val/absent" not in curves
    assert read_curves(tmp_path / "missing.csv", ["train/loss"]) == {}


def test_render_without_runs_metrics_or_git(tmp_path):
    store = RunStore(tmp_path / "runs")
    save_runs(store, [make_record("20261125-000000-00000000", metrics={})], tmp_path)
    html = render_report(build_table(load_runs(store)))
    assert '"metrics":[]' in html and '"git":{}' in html
