"""The HTML report of `liveml compare --html`, opened from disk in headless Chromium: it is
self-contained, every plot renders (parcoords through WebGL), the diff selects work, and the
layout holds: the headline metric is picked, the table scrolls in its box, ticks are plain
numbers and the toolbar leaves the legend alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liveml.tracking.compare import build_table, load_runs
from liveml.tracking.compare_report import (
    MAX_POINTS,
    headline_metric,
    read_curves,
    render_report,
    report_data,
    write_report,
)
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
    # The task's headline metric (defects: map_50, as training logs it: val/map_50).
    assert page.evaluate("DATA.default_metric") == "val/map_50"
    assert page.evaluate("document.getElementById('metric').value") == "val/map_50"
    # One scatter per varied param, then parcoords and curves: each drawn by plotly.
    ids = [f"plot-scatter-{i}" for i in range(len(params))] + ["plot-parcoords", "plot-curves"]
    for plot_id in ids:
        assert page.evaluate(f"document.querySelectorAll('#{plot_id} .main-svg').length") > 0
    # Parcoords: an axis per varied param plus the metric, and WebGL actually drew lines.
    titles = page.evaluate(
        "[...document.querySelectorAll('#plot-parcoords .axis-title')].map(t => t.textContent)"
    )
    assert titles == [*params, "val/map_50"]
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


def test_headline_metric_comes_from_the_task_contract(tmp_path):
    store = RunStore(tmp_path / "runs")
    metrics = {"train/loss": 1.0, "val/cer": 0.1, "val/loss": 0.5, "val/wer": 0.2}
    records = [make_record(f"20261125-0{i}0000-0000000{i}", metrics=metrics) for i in range(3)]
    for r in records[1:]:
        r["task"] = "speech"  # the most common task decides
    save_runs(store, records, tmp_path)
    data = report_data(build_table(load_runs(store)))
    assert data["headline"] == {"metric": "val/cer", "higher_is_better": False}
    assert data["default_metric"] == "val/cer"
    # A task nobody installed, or a headline the runs never logged: the first val/ metric.
    runs = load_runs(store)
    for r in runs:
        r.record["task"] = "no-such-task"
    assert headline_metric(list(runs), ["train/loss", "val/cer"]) is None
    assert headline_metric([], ["val/cer"]) is None
    assert report_data(build_table(runs))["default_metric"] == "val/cer"
    r = runs[0]
    r.record["task"] = "defects"
    assert headline_metric([r], ["test/map_50", "val/map"]) == {
        "metric": "test/map_50",
        "higher_is_better": True,
    }


# -- layout ------------------------------------------------------------------------------------

N_WIDE = 12


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """12 runs varying 10 params (a table wider than the window), with an mAP around 0.0005
    (the values plotly's default ticks print as `495μ`)."""
    tmp = tmp_path_factory.mktemp("wide")
    store = RunStore(tmp / "runs")
    records = []
    for i in range(N_WIDE):
        r = make_record(
            f"20261125-{i:02d}0000-000000{i:02d}",
            lr=0.0001 * 2**i,
            batch_size=8 * (i % 4 + 1),
            brightness=0.5 + 0.05 * i,
            metrics={
                "train/loss": 1.0 / (i + 1),
                "val/map": 0.0002 + 1e-5 * i,
                "val/map_50": 0.000495 + 1e-5 * i,
            },
        )
        r["config"]["model"]["weight_decay"] = 1e-5 * (i + 1)
        r["config"]["model"]["channels"] = [16 + i, 32 + i, 64 + i, 128 + i]
        r["config"]["data"]["n_train"] = 1000 + 100 * i
        r["config"]["data"]["capture"]["blur"] = 0.1 * i
        r["config"]["data"]["voices"] = [f"voice-variant-{j}" for j in range(i, i + 6)]
        r["config"]["trainer"]["max_epochs"] = 10 + i
        r["config"]["seed"] = i
        records.append(r)
    save_runs(store, records, tmp)
    return write_report(tmp / "report.html", build_table(load_runs(store)))


def rect(page, selector: str) -> dict:
    return page.evaluate(
        f"(e => {{ const r = e.getBoundingClientRect();"
        f" return {{left: r.left, right: r.right, top: r.top, bottom: r.bottom}}; }})"
        f"(document.querySelector({json.dumps(selector)}))"
    )


def overlap(a: dict, b: dict) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and (b["top"] < a["bottom"])
    )


def tick_texts(page, selector: str) -> list[str]:
    return page.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})].map(t => t.textContent)"
    )


def as_number(text: str) -> float:
    """A tick label as a number; ValueError for SI prefixes such as `495μ` or `1k`."""
    return float(text.replace(",", "").replace("\u2212", "-"))


def test_layout_fits_the_window_and_reads_well(browser, wide_report, tmp_path):
    page = browser
    page.open(wide_report.as_uri())
    page.wait_for("['ready', 'error'].includes(document.body.dataset.state)", timeout=60)
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.console_errors == []

    # The picker starts at the headline metric, marked as such.
    assert page.evaluate("document.getElementById('metric').value") == "val/map_50"
    picked = page.evaluate(
        "(s => s.options[s.selectedIndex].textContent)(document.getElementById('metric'))"
    )
    assert picked == "val/map_50 (headline)"
    assert page.evaluate("document.querySelector('#runs th.headline').textContent") == "val/map_50"

    # The page never scrolls sideways: the table scrolls inside its own box.
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    table_box = rect(page, "#runs-box")
    assert table_box["left"] >= 0 and table_box["right"] <= width
    assert rect(page, "#runs")["right"] > width, "the table should be wider than the window"
    scroll = (
        "(b => { b.scrollLeft = 150; return b.scrollLeft; })(document.getElementById('runs-box'))"
    )
    assert page.evaluate(scroll) == 150
    page.evaluate("document.getElementById('runs-box').scrollLeft = 0")

    # Scatters get room: full rows of >= 400 px wide plots, 10 of them (one per varied param).
    n = page.evaluate("DATA.params.length")
    assert n == 10
    for i in range(n):
        box = rect(page, f"#plot-scatter-{i}")
        assert box["right"] - box["left"] >= 400 and box["bottom"] - box["top"] >= 300
        assert box["right"] <= width
    # Long category values (voice lists) are cut on the axis, and leave the data room.
    voices = page.evaluate("DATA.params").index("data.voices")
    labels = tick_texts(page, f"#plot-scatter-{voices} .xtick text")
    assert labels and max(len(t) for t in labels) <= 28 and labels[0].endswith("...")
    heights = page.evaluate(
        f"[...Array({n}).keys()].map(i => document.getElementById(`plot-scatter-${{i}}`)"
        "._fullLayout._size.h)"
    )
    assert min(heights) >= 200, heights

    # Ticks are plain numbers: the metric's (about 0.0005) and a log-scaled learning rate's.
    metric_ticks = tick_texts(page, "#plot-scatter-0 .ytick text")
    assert metric_ticks and not [t for t in metric_ticks if "\u03bc" in t or "m" in t]
    values = [as_number(t) for t in metric_ticks]
    assert 0.0004 < max(values) < 0.001
    params = page.evaluate("DATA.params")
    lr = params.index("model.lr")
    assert page.evaluate(f"document.getElementById('plot-scatter-{lr}').layout.xaxis.type") == "log"
    assert all(as_number(t) > 0 for t in tick_texts(page, f"#plot-scatter-{lr} .xtick text"))
    curve_ticks = tick_texts(page, "#plot-curves .ytick text")
    assert curve_ticks and all(as_number(t) >= 0 for t in curve_ticks)
    hover = page.evaluate("document.getElementById('plot-curves').layout.yaxis.hoverformat")
    assert hover.endswith("~r")

    # The toolbar (modebar) of each plot with a legend never covers the legend.
    assert page.evaluate("document.querySelectorAll('#plot-curves .legend .traces').length") == (
        N_WIDE
    )
    assert not overlap(rect(page, "#plot-curves .legend"), rect(page, "#plot-curves .modebar"))
    # Parcoords: the colour bar and the axis titles stay clear of the toolbar too.
    modebar = rect(page, "#plot-parcoords .modebar")
    titles = page.evaluate(
        "[...document.querySelectorAll('#plot-parcoords .axis-title')].map(t => {"
        " const r = t.getBoundingClientRect();"
        " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })"
    )
    assert len(titles) == n + 1
    assert not [t for t in titles if overlap(t, modebar)]

    shot = page.screenshot(tmp_path / "compare-report.png", full_page=True)
    assert shot.startswith(b"\x89PNG") and (tmp_path / "compare-report.png").stat().st_size > 10_000
