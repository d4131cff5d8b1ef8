"""DVC's own views of the tiny pipeline's outputs, as a user runs them: `dvc plots show` draws
every declared plot (its fields exist in the data, with its title) and nothing else;
`dvc metrics show` and `dvc exp show` list the headline metrics only and fit a screen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from liveml.core.config import pipeline_tasks
from liveml.core.project import Project

from tinyrepo import REPO, run

TASKS = pipeline_tasks(Project(REPO))
# What a screen shows: `dvc metrics show` must fit it for every task of the pipeline.
SCREEN = 120


@pytest.fixture(scope="module")
def repo(tiny_pipeline: Path, tmp_path_factory) -> Path:
    """A copy (DVC writes its plot files into the working folder)."""
    root = tmp_path_factory.mktemp("views") / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    return root


def declared(repo: Path) -> dict[str, dict]:
    """{plot id: its definition} of dvc.yaml's top-level plots."""
    return {
        name: plot
        for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
        for name, plot in entry.items()
    }


def test_every_declared_plot_renders_with_its_fields_and_title(repo: Path):
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert shown.get("errors", []) == []
    plots = declared(repo)
    # Only the declared plots: no default plot of a stage's folder.
    assert set(shown["data"]) == set(plots)
    for name, plot in plots.items():
        [render] = shown["data"][name]
        assert render["type"] == "vega", name
        values = render["content"]["data"]["values"]
        assert values, f"{name} has no data"
        ys = plot["y"] if isinstance(plot["y"], dict) else {name: plot["y"]}
        fields = {plot["x"], *ys.values()}
        for field in fields:
            # DVC renames the y field of a multi-file plot to dvc_inferred_y_value.
            assert any(field in v or "dvc_inferred_y_value" in v for v in values), (name, field)
        assert plot["title"] in json.dumps(render["content"]), name
        if len(ys) > 1:  # every file of the plot contributes its rows (DVC names the file)
            assert {Path(f).name for f in ys} <= {v.get("filename") for v in values}, name


def test_metrics_show_lists_the_headline_numbers_and_fits_a_screen(repo: Path):
    from liveml.tasks import get_task

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    [(_, workspace)] = [(k, v) for k, v in shown.items() if k == "workspace"] or shown.items()
    files = workspace["data"]
    params = yaml.safe_load((repo / "params.yaml").read_text())["tasks"]
    assert set(files) == {params[t]["paths"]["metrics"] for t in TASKS}  # no data report
    for task in TASKS:
        data = files[params[task]["paths"]["metrics"]]["data"]
        assert get_task(task).headline.metric in data and "meets_scope" in data
        assert all(isinstance(v, int | float | bool) for v in data.values()), data
    table = run(["dvc", "metrics", "show"], repo, env={"COLUMNS": "400"}).stdout
    width = max(len(line) for line in table.splitlines())
    print(f"dvc metrics show: {width} columns wide")
    assert width <= SCREEN, table


def test_exp_show_has_no_data_report_columns(repo: Path):
    [workspace] = [b for b in json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
                   if b["rev"] == "workspace"]  # fmt: skip
    metrics = workspace["data"]["metrics"]
    params = yaml.safe_load((repo / "params.yaml").read_text())["tasks"]
    assert set(metrics) == {params[t]["paths"]["metrics"] for t in TASKS}
    columns = sum(len(m["data"]) for m in metrics.values())
    print(f"dvc exp show: {columns} metric columns")
    assert columns <= 8 * len(TASKS)


def test_exp_show_only_changed_fits_a_screen(repo: Path):
    """`make exps`: DVC's experiments table without the columns every row shares. (The plain
    `dvc exp show` has a column per tracked param and code dependency, and DVC has no setting
    for its default columns.)"""
    make = (REPO / "Makefile").read_text()
    assert "dvc exp show --only-changed" in make
    table = run(
        ["dvc", "exp", "show", "--only-changed", "--no-pager"], repo, env={"COLUMNS": "400"}
    )
    lines = table.stdout.splitlines()
    width = max(len(line) for line in lines)
    print(f"dvc exp show --only-changed: {width} columns wide")
    assert "workspace" in table.stdout
    assert width <= SCREEN, table.stdout
