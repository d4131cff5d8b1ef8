"""Bounded drift reports: `liveml monitor` keeps the newest `monitor.keep_reports` reports and
none older than `monitor.keep_days` in `paths.monitoring`, never one a feedback version was made
from; the reports there share one plotly.js, and each pass prints its report's and the folder's
size."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from liveml.monitoring.monitor import (
    REPORT,
    SUMMARY,
    Keep,
    MonitorError,
    prune_reports,
    report_folders,
    size_text,
)

DAY = 86400


def make_report(root: Path, name: str, age_days: float, now: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / SUMMARY).write_text(json.dumps({"windows": []}))
    (folder / "window_0000.json").write_text("{}")
    stamp = now - age_days * DAY
    os.utime(folder / SUMMARY, (stamp, stamp))
    return folder


def test_prune_by_count_and_age_keeps_current_and_feedback_reports(tmp_path: Path):
    now = time.time()
    root = tmp_path / "monitoring" / "defects"
    ages = {"r0": 0.0, "r1": 1.0, "r2": 2.0, "r3": 3.0, "r4": 10.0, "r5": 20.0}
    folders = {name: make_report(root, name, age, now) for name, age in ages.items()}
    (root / "notes").mkdir()  # not a report: never touched
    (root / "plotly-x.min.js").write_text("//")
    # A feedback version made from r5: its provenance names the report's summary.
    version = tmp_path / "feedback" / "defects" / "v001"
    version.mkdir(parents=True)
    provenance = {"drift_report": {"summary": str(folders["r5"] / SUMMARY), "last": "x"}}
    (version / "provenance.json").write_text(json.dumps(provenance))

    assert report_folders(root) == [folders[n] for n in ("r0", "r1", "r2", "r3", "r4", "r5")]
    keep = Keep(root, count=3, days=5.0, feedback=tmp_path / "feedback" / "defects")
    removed = prune_reports(keep, current=folders["r0"], now=now)
    # r3 is beyond the newest 3, r4 older than 5 days; r5 is both but a feedback version's.
    assert sorted(p.name for p in removed) == ["r3", "r4"]
    assert sorted(p.name for p in root.iterdir()) == [
        "notes", "plotly-x.min.js", "r0", "r1", "r2", "r5",
    ]  # fmt: skip

    # No limits: nothing goes. Age only: r1 and r2 are older than 0.5 days.
    assert prune_reports(Keep(root, None, None), now=now) == []
    assert {p.name for p in prune_reports(Keep(root, None, 0.5), now=now)} == {"r1", "r2", "r5"}


@pytest.mark.parametrize(
    ("count", "days", "fix"),
    [(0, None, "keep_reports=0"), (None, -1.0, "keep_days=-1.0"), (None, 0.0, "keep_days=0.0")],
)
def test_bad_limits_name_the_key_and_the_fix(tmp_path, count, days, fix):
    with pytest.raises(MonitorError, match=re.escape(fix)) as e:
        prune_reports(Keep(tmp_path, count, days))
    assert "fix:" in str(e.value) and "null" in str(e.value)


def test_size_text():
    assert size_text(870) == "870 B" and size_text(4_940) == "4.9 kB"
    assert size_text(312_400) == "312 kB"
    assert size_text(4_900_000) == "4.9 MB" and size_text(235_000_000) == "235 MB"


# --- the real command on the tiny pipeline -------------------------------------------------


@pytest.fixture(scope="module")
def repo(tiny_pipeline: Path, tmp_path_factory) -> Path:
    """A copy of the tiny pipeline whose defects monitor keeps 2 reports, and 40 inputs."""
    from liveml.core.config import load_params
    from liveml.core.project import Project
    from liveml.monitoring.monitor import draw_inputs
    from liveml.tasks import get_task

    root = tmp_path_factory.mktemp("reports") / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tasks"]["defects"]["monitor"]["keep_reports"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_params("defects", Project(root))
    inputs = root / "inputs"
    inputs.mkdir()
    for i, data in enumerate(draw_inputs(get_task("defects"), cfg, 40, stream=5)):
        (inputs / f"in_{i:03d}.png").write_bytes(data)
    return root


def test_monitor_reports_share_plotly_print_sizes_and_are_pruned(repo: Path, monitor):
    import plotly

    folder = repo / "monitoring" / "defects"
    made = []
    for _ in range(3):
        out = monitor(repo, "defects", "--inputs", str(repo / "inputs"), "--window", "20")
        assert out.returncode in (0, 1), out.stderr
        made.append(Path(re.search(r"reports: (\S+)", out.stdout).group(1)))
        time.sleep(1.1)  # report folders are named by the second
    # One line per pass: the report's size and the folder's, and what the folder keeps.
    line = [x for x in out.stderr.splitlines() if x.startswith("monitor: report ")]
    assert len(line) == 1, out.stderr
    assert re.search(r"report .+ \d+(\.\d)? kB; .+monitoring/defects: 2 report\(s\), ", line[0])
    assert "keeps the newest 2 and none older than 30 days" in line[0]
    assert "removed 1 old report(s)" in line[0]
    # Only the newest two are left, next to the one shared plotly.js.
    shared = folder / f"plotly-{plotly.__version__}.min.js"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [made[1].name, made[2].name, shared.name]
    )
    assert shared.stat().st_size > 3_000_000
    page = (made[2] / REPORT).read_text()
    assert f'<script src="../{shared.name}"></script>' in page
    assert made[2].joinpath(REPORT).stat().st_size < 300_000  # was ~4.9 MB with plotly inlined
    assert json.loads((made[2] / SUMMARY).read_text())["windows"]


def test_a_report_with_shared_plotly_renders_in_chromium(repo: Path, monitor, tmp_path):
    """Headless Chromium opens the page from disk as a user does: the plotly.js next to the
    report's folder runs (the page reaches its `ready` state and draws its plots); without that
    file the page says what is missing."""
    import plotly

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (make chromium installs it)")
    out = monitor(repo, "defects", "--inputs", str(repo / "inputs"), "--window", "20")
    report = Path(re.search(r"reports: (\S+)", out.stdout).group(1)) / REPORT

    def dom() -> str:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip

    page = dom()
    assert 'data-state="ready"' in page, page[-2000:]
    assert "js-plotly-plot" in page and '<p id="plotly-missing"' not in page
    shared = report.parent.parent / f"plotly-{plotly.__version__}.min.js"
    shared.rename(tmp_path / shared.name)
    try:
        page = dom()
        assert '<p id="plotly-missing"' in page and 'data-state="ready"' not in page
    finally:
        (tmp_path / shared.name).rename(shared)
