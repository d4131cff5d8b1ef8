"""The drift page of `liveml monitor`, opened from disk in headless Chromium: it is
self-contained, every plot renders from the embedded summary, the window picker redraws the
histograms, and a summary without windows says so.

The summary is built here the way the monitor builds it: per-window tests with scipy on
synthetic samples (6 windows of 200 against a 1000-row reference; brightness drifts from
window 3 on, the model's confidence drops in windows 4 and 5).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from liveml.monitoring.report import render_html, write_html

from browser import Browser

# A feature name that would end the data <script> early if the JSON were not escaped.
HOSTILE = "</script><script>alert('escaped?')</script><!--"
ALPHA = 0.05
N_REFERENCE, N_WINDOW, N_WINDOWS = 1000, 200, 6
CLASSES = ["scratch", "crack", "dead_pixel", "smudge"]
NUMERIC = ["brightness", "contrast", "confidence"]
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def sample(rng: np.random.Generator, n: int, brightness: float = 0.0, confidence: float = 0.0):
    """Per-input features: numeric arrays and predicted classes, optionally shifted."""
    numeric = {
        "brightness": rng.normal(0.5 + brightness, 0.08, n),
        "contrast": rng.normal(0.3, 0.05, n),
        "confidence": np.clip(rng.beta(8, 2, n) - confidence, 0, 1),
    }
    classes = rng.choice(CLASSES, size=n, p=[0.4, 0.3, 0.2, 0.1])
    return numeric, classes


def quantiles(x: np.ndarray) -> dict:
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return {"mean": float(x.mean()), "std": float(x.std()), "p5": p5, "p50": p50, "p95": p95}


def shares(labels: np.ndarray) -> dict:
    return {c: float(np.mean(labels == c)) for c in CLASSES}


def numeric_test(ref: np.ndarray, win: np.ndarray) -> dict:
    """KS test, effect sizes, quantiles and the 20-bin histograms of one numeric feature."""
    ks = stats.ks_2samp(ref, win)
    edges = np.linspace(*np.quantile(ref, [0.01, 0.99]), 21)
    inner = edges[1:-1]  # values beyond the edges land in the end bins

    def hist(x):
        return (np.bincount(np.searchsorted(inner, x), minlength=20) / len(x)).tolist()

    return {
        "kind": "numeric",
        "test": "ks",
        "statistic": float(ks.statistic),
        "p_value": float(ks.pvalue),
        "shift_sd": float((win.mean() - ref.mean()) / ref.std()),
        "wasserstein_sd": float(stats.wasserstein_distance(ref, win) / ref.std()),
        "reference": quantiles(ref),
        "window": quantiles(win),
        "histogram": {"edges": edges.tolist(), "reference": hist(ref), "window": hist(win)},
    }


def window_report(ref, win, embedding_p: float) -> dict:
    """One window in the shape of `drift.compare`: every test, BH-adjusted together."""
    (ref_num, ref_cls), (win_num, win_cls) = ref, win
    features = {name: numeric_test(ref_num[name], win_num[name]) for name in NUMERIC}
    counts = [[int(np.sum(c == k)) for k in CLASSES] for c in (ref_cls, win_cls)]
    chi2 = stats.chi2_contingency(counts)
    features["predicted_class"] = {
        "kind": "categorical",
        "test": "chi2",
        "statistic": float(chi2.statistic),
        "p_value": float(chi2.pvalue),
        "reference": shares(ref_cls),
        "window": shares(win_cls),
    }
    features["embedding"] = {
        "kind": "multivariate",
        "test": "mmd",
        "statistic": 0.004 if embedding_p > ALPHA else 0.05,
        "p_value": embedding_p,
        "permutations": 500,
        "dims": 16,
    }
    adjusted = stats.false_discovery_control([f["p_value"] for f in features.values()])
    for f, p in zip(features.values(), adjusted, strict=True):
        f["p_adjusted"] = float(p)
        f["drifted"] = bool(p <= ALPHA)
    # The window's confidence stochastically lower than the reference's: one-sided KS.
    lower = stats.ks_2samp(win_num["confidence"], ref_num["confidence"], alternative="greater")
    drifted = [name for name, f in features.items() if f["drifted"]]
    return {
        "n": len(win_cls),
        "n_reference": len(ref_cls),
        "alpha": ALPHA,
        "correction": "benjamini-hochberg",
        "drift": bool(drifted),
        "drifted": drifted,
        "features": features,
        "confidence": {
            "feature": "confidence",
            "reference_mean": float(ref_num["confidence"].mean()),
            "window_mean": float(win_num["confidence"].mean()),
            "drop": float(ref_num["confidence"].mean() - win_num["confidence"].mean()),
            "statistic": float(lower.statistic),
            "p_value": float(lower.pvalue),
            "drifted": bool(lower.pvalue <= ALPHA),
        },
    }


def make_summary(windows: list[dict], retrain: dict | None = None) -> dict:
    drifted = [w["index"] for w in windows if w["drift"]]
    longest = run = 0
    for w in windows:
        run = run + 1 if w["drift"] else 0
        longest = max(longest, run)
    rng = np.random.default_rng(0)
    ref_num, _ = sample(rng, N_REFERENCE)
    return {
        "task": "defects",
        "created": "2026-11-25T12:00:00+00:00",
        "source": "/srv/liveml/captures/defects",
        "reference": {
            "path": "data/defects/reference/profile.npz",
            "n": N_REFERENCE,
            "model": {"run_id": "20261120-083000-1a2b3c4d", "weights_sha256": "9f" * 32},
            "features": {name: quantiles(ref_num[name]) for name in NUMERIC},
        },
        "settings": {
            "window": N_WINDOW,
            "every": None,
            "alpha": ALPHA,
            "consecutive": 3,
            "permutations": 500,
        },
        "windows": windows,
        "drift": bool(drifted),
        "drifted_windows": drifted,
        "longest_run": longest,
        "persistent": longest >= 3,
        "retrain": retrain,
    }


def make_windows() -> list[dict]:
    rng = np.random.default_rng(0)
    ref = sample(rng, N_REFERENCE)
    windows = []
    for i in range(N_WINDOWS):
        win = sample(
            rng, N_WINDOW, brightness=-0.1 if i >= 3 else 0.0, confidence=0.15 if i >= 4 else 0.0
        )
        start = T0 + timedelta(minutes=20 * i)
        windows.append(
            {
                "index": i,
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=19, seconds=59)).isoformat(),
                "first": f"20261125T{10 + i // 3:02d}{20 * (i % 3):02d}00-{i * N_WINDOW:06d}",
                "last": f"capture-{(i + 1) * N_WINDOW - 1:06d}",
                **window_report(ref, win, embedding_p=0.002 if i >= 3 else 0.41),
            }
        )
    return windows


RETRAIN = {
    "decision": "promoted",
    "reason": "challenger val/map 0.612 beats the champion's 0.574 by more than 0.01",
    "experiment": "retrain-defects-20261125",
    "feedback_version": "feedback-v3",
    "champion": {
        "run_id": "20261120-083000-1a2b3c4d",
        "metrics": {"val/map": 0.574, "val/map_50": 0.81},
    },
    "challenger": {
        "run_id": "20261125-120500-5e6f7a8b",
        "metrics": {"val/map": 0.612, "val/map_50": 0.84},
    },
}


@pytest.fixture(scope="module")
def summary() -> dict:
    s = make_summary(make_windows(), retrain=RETRAIN)
    # The data really is what the page is meant to show (a different seed could make it not).
    assert [w["drifted"] for w in s["windows"]][:3] == [[], [], []]
    assert all("brightness" in w["drifted"] for w in s["windows"][3:])
    assert [w["confidence"]["drifted"] for w in s["windows"]] == [False] * 4 + [True] * 2
    assert s["drifted_windows"] == [3, 4, 5] and s["persistent"]
    return s


def plotly_free(text: str) -> str:
    """The page without the inlined plotly.js (its source names links it never requests)."""
    start = text.index("<script>") + len("<script>")
    return text[:start] + text[text.index("</script>", start) :]


def embedded(text: str) -> dict:
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return json.loads(found.group(1))


# -- without a browser ------------------------------------------------------------------------


def test_page_is_self_contained(tmp_path, summary):
    path = write_html(summary, tmp_path / "monitor" / "drift.html")
    text = path.read_text()
    assert "Plotly" in text and text.count("</script>") == 3
    ours = plotly_free(text)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", ours, re.I)
    assert not re.search(r"https?://|url\(", ours, re.I)
    assert embedded(text) == json.loads(json.dumps(summary))


def test_feature_named_like_a_closing_script_tag_stays_data(tmp_path, summary):
    hostile = json.loads(json.dumps(summary))
    for w in hostile["windows"]:
        w["features"][HOSTILE] = w["features"].pop("brightness")
    hostile["task"] = HOSTILE
    text = render_html(hostile)
    # Exactly plotly's, the data's and the page's script elements end; the name survives whole.
    assert text.count("</script>") == 3 and text.count("<script") == 3
    assert HOSTILE in embedded(text)["windows"][0]["features"]
    assert f"<title>liveml drift: {HOSTILE}</title>" not in text


def test_write_is_atomic(tmp_path, summary):
    path = tmp_path / "drift.html"
    path.write_text("previous page")
    with pytest.raises(TypeError):  # not JSON: fails before anything is written
        write_html({**summary, "retrain": {"decision": object()}}, path)
    assert path.read_text() == "previous page"
    assert write_html(summary, path) == path
    assert path.read_text().startswith("<!doctype html>")
    assert os.listdir(tmp_path) == ["drift.html"]  # no temp file left behind


def test_render_names_what_is_wrong_with_the_input():
    with pytest.raises(ValueError, match="'windows' list"):
        render_html({"task": "defects"})


# -- in Chromium ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module: starting it is the slow part."""
    with Browser(timeout=30) as b:
        yield b


def open_page(browser: Browser, path: Path) -> Browser:
    browser.requests.clear()
    browser.open(path.as_uri())
    browser.wait_for("['ready', 'error'].includes(document.body.dataset.state)", timeout=30)
    return browser


@pytest.fixture(scope="module")
def page(browser, summary, tmp_path_factory):
    return open_page(browser, write_html(summary, tmp_path_factory.mktemp("page") / "drift.html"))


def count(page, selector: str) -> int:
    return page.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")


def plot(page, plot_id: str, what: str):
    """`what` of a plot's figure, e.g. `data.length` or `data[1].y`."""
    return page.evaluate(f"document.getElementById('{plot_id}').{what}")


def test_every_plot_renders_offline_without_errors(page, summary):
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.console_errors == [] and page.dialogs == []
    assert page.requests and all(u.startswith(("file:", "data:")) for u in page.requests), (
        page.requests
    )
    sources = page.evaluate(
        "[...document.querySelectorAll('[src], [href]')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))"
    )
    assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
    # Header: the verdict, the reference and the retraining outcome with its metric table.
    assert page.evaluate("document.getElementById('verdict').textContent") == "Drift, persistent"
    facts = page.evaluate("document.getElementById('facts').innerText")
    assert "data/defects/reference/profile.npz (n = 1000)" in facts and "#3, #4, #5" in facts
    retrain = page.evaluate("document.getElementById('retrain').innerText")
    assert "promoted" in retrain and "metrics.val/map" in retrain and "0.038" in retrain

    ids = ["plot-timeline", "plot-heatmap", "plot-confidence", "plot-categorical-0"]
    ids += [f"plot-{kind}-{i}" for kind in ("over", "histogram") for i in range(len(NUMERIC))]
    assert count(page, ".js-plotly-plot") == len(ids)
    for plot_id in ids:
        assert count(page, f"#{plot_id} .main-svg") > 0, plot_id
        assert count(page, f"#{plot_id} .trace, #{plot_id} .hm") > 0, plot_id  # something drawn

    # One over-time panel per numeric feature: band, reference p50, window quantiles.
    titles = [plot(page, f"plot-over-{i}", "layout.title.text") for i in range(len(NUMERIC))]
    assert titles == NUMERIC
    assert plot(page, "plot-over-0", "data.length") == 4
    assert plot(page, "plot-over-0", "layout.shapes.length") == 3  # the drifted windows
    red = plot(page, "plot-over-0", "data[3].marker.color")
    assert [c == "#c0392b" for c in red] == [False] * 3 + [True] * 3
    # Stacked categorical shares: a trace per class, the reference plus each window.
    assert plot(page, "plot-categorical-0", "data.map(t => t.name)") == CLASSES
    assert plot(page, "plot-categorical-0", "data[0].x.length") == 1 + N_WINDOWS
    # Timeline and table: one entry per window, the last three drifted.
    drifted_tests = plot(page, "plot-timeline", "data[0].y")
    assert drifted_tests == [len(w["drifted"]) for w in summary["windows"]]
    assert drifted_tests[:3] == [0, 0, 0] and min(drifted_tests[3:]) >= 2
    verdicts = page.evaluate(
        "[...document.querySelectorAll('#windows tbody tr')].map(r => r.cells[3].textContent)"
    )
    assert verdicts == ["ok"] * 3 + ["drift"] * 3
    assert "confidence drop" in page.evaluate("document.querySelector('#windows tbody').innerText")
    assert plot(page, "plot-confidence", "data[1].y.length") == N_WINDOWS


def test_heatmap_has_a_cell_per_feature_and_window(page, summary):
    features = list(summary["windows"][0]["features"])
    assert plot(page, "plot-heatmap", "data[0].y") == features
    z = plot(page, "plot-heatmap", "data[0].z")
    assert len(z) == len(features) and all(len(row) == N_WINDOWS for row in z)
    assert count(page, "#plot-heatmap .hm image") == 1  # plotly rasterised the cells
    # Drifted cells are exactly those at or above -log10(alpha).
    threshold = -np.log10(ALPHA)
    drifted = [[w["features"][f]["drifted"] for w in summary["windows"]] for f in features]
    assert (np.array(z) >= threshold).tolist() == drifted
    assert "alpha = 0.05" in page.evaluate("document.getElementById('heatmap-note').textContent")


def test_window_picker_redraws_the_histograms(page, summary):
    def histogram(i: int = 0):
        return plot(page, f"plot-histogram-{i}", "data[1]")

    # Default: the last drifted window.
    assert page.evaluate("document.getElementById('window-pick').value") == "5"
    assert (
        histogram()["y"] == summary["windows"][5]["features"]["brightness"]["histogram"]["window"]
    )
    page.evaluate(
        "(s => { s.value = '1'; s.dispatchEvent(new Event('change')); })"
        "(document.getElementById('window-pick'))"
    )
    page.wait_for("document.body.dataset.state === 'ready'")
    for i, name in enumerate(NUMERIC):
        assert histogram(i)["y"] == summary["windows"][1]["features"][name]["histogram"]["window"]
    assert histogram()["name"] == "window #1"
    # Clicking a row of the window table picks that window too.
    page.evaluate("document.querySelector('#windows tbody tr[data-index=\"3\"]').click()")
    page.wait_for("document.body.dataset.state === 'ready'")
    assert histogram()["name"] == "window #3"
    assert "(drift)" in plot(page, "plot-histogram-0", "layout.title.text")
    assert count(page, "#windows tr.picked") == 1
    assert page.console_errors == []


def test_summary_without_windows_says_so(browser, tmp_path):
    empty = make_summary([])
    empty["source"] = HOSTILE  # shown as text, never run
    page = open_page(browser, write_html(empty, tmp_path / "drift.html"))
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.console_errors == [] and page.dialogs == []
    message = page.evaluate("document.getElementById('empty').innerText")
    assert message.startswith("No windows yet") and "200 captures" in message
    assert page.evaluate("document.getElementById('verdict').textContent") == "No windows yet"
    assert page.evaluate("document.getElementById('windows-part').hidden")
    assert count(page, ".js-plotly-plot") == 0
    assert HOSTILE in page.evaluate("document.getElementById('facts').innerText")


def test_page_of_windows_from_liveml_drift_compare(browser, tmp_path):
    """The page reads what `drift.compare` really writes, embedding test included."""
    from liveml.monitoring.drift import Profile, compare

    rng = np.random.default_rng(1)

    def profile(n: int, shift: float = 0.0) -> Profile:
        numeric, classes = sample(rng, n, brightness=shift)
        embedding = rng.normal(shift * 5, 1, (n, 8)).astype(np.float32)
        return Profile(numeric, {"predicted_class": classes}, embedding)

    reference = profile(N_REFERENCE)
    windows = [
        {"index": i, "start": (T0 + timedelta(hours=i)).isoformat(),
         "end": (T0 + timedelta(hours=i + 1)).isoformat(), "first": "a", "last": "b",
         **compare(reference, profile(N_WINDOW, shift=-0.1 if i >= 2 else 0.0), alpha=ALPHA)}
        for i in range(4)
    ]  # fmt: skip
    assert "brightness" in windows[3]["drifted"]
    page = open_page(browser, write_html(make_summary(windows), tmp_path / "drift.html"))
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.console_errors == [] and page.dialogs == []
    numeric = [n for n, f in windows[0]["features"].items() if f["kind"] == "numeric"]
    assert count(page, "#over-time .main-svg") > 0 and count(page, "#histograms .main-svg") > 0
    assert count(page, "#over-time > div") == count(page, "#histograms > div") == len(numeric)
    assert plot(page, "plot-heatmap", "data[0].y") == list(windows[0]["features"])
    assert plot(page, "plot-heatmap", "data[0].z.map(r => r.length)") == [4] * len(
        windows[0]["features"]
    )
