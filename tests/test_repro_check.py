""".ci/repro-check: a fresh repro of the committed tiny pipeline gives its committed results,
and a committed result that a repro does not give is named."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from tinyrepo import REPO, git

SCRIPT = REPO / ".ci" / "repro-check"


def load_script():
    loader = importlib.machinery.SourceFileLoader("repro_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("repro_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_fresh_repro_gives_the_committed_results_and_a_difference_is_named(
    tiny_pipeline, tmp_path, capsys
):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, repo, symlinks=True)
    work = tmp_path / "check"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--repo", str(repo), "--workdir", str(work)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "a fresh repro gives the committed model and data" in out.stdout
    # Model folders differ in bytes (run ids, times) but not in weights; exports are identical.
    assert "same model  data/defects/model" in out.stdout
    assert "DIFFERENT" not in out.stdout

    # A committed metric that no repro gives (a hand-edited number) is named; a machine-speed
    # number that differs is shown but not judged.
    metrics = repo / "metrics" / "defects.json"
    values = json.loads(metrics.read_text())
    values["map_50"] = values["map_50"] + 0.25
    values["latency_p95_ms"] = 12345.0
    metrics.write_text(json.dumps(values))
    git(repo, "commit", "-qam", "hand-edited metric")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert load_script().check(repo, head, work / "repo") == 1
    printed = capsys.readouterr().out
    assert "DIFFERENT  metrics/defects.json" in printed
    assert "DIFFERENT: map_50" in printed and "machine: latency_p95_ms" in printed
    assert "1 output(s) differ" in printed
