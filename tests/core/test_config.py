"""conf/ is the one source of truth: params.yaml is its composition, and bad config is named."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from liveml.core.config import (
    PARAMS_HEADER,
    ConfigError,
    check,
    compose,
    fingerprint_view,
    load_params,
    pipeline_tasks,
    stale_keys,
    to_dict,
    write_params,
)
from liveml.core.project import Project

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A throwaway copy of the repo's conf/ and params.yaml."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return Project(tmp_path)


def test_committed_params_yaml_is_the_composition_of_conf():
    project = Project(REPO)
    assert stale_keys(project) == [], "run `liveml params` and commit params.yaml"
    assert project.params_file.read_text().startswith(PARAMS_HEADER)
    assert pipeline_tasks(project) == ["defects", "speech"]


@pytest.mark.parametrize("task", ["defects", "speech"])
def test_pipeline_task_equals_a_single_run_of_that_task(task: str):
    """The pipeline's model of a task and `python -m liveml.training task=<task>` share a config."""
    project = Project(REPO)
    assert to_dict(load_params(task, project)) == to_dict(compose([f"task={task}"], project))


def test_task_selects_its_own_model_and_data_and_paths(project: Project):
    speech = compose(["task=speech"], project)
    assert speech.model.name == "crnn_ctc" and speech.data.sample_rate == 16000
    assert speech.paths.data == "data/speech/raw"
    assert compose(project=project).model.name == "fcos_tiny"


def test_load_params_of_an_unknown_task_lists_the_known_ones(project: Project):
    with pytest.raises(ConfigError, match=r"has no `tasks\.nope`; it has: defects, speech"):
        load_params("nope", project)


def test_write_params_then_edit_conf_is_detected_as_stale(project: Project):
    write_params(project)
    assert stale_keys(project) == []
    conf = project.conf_dir / "model" / "fcos_tiny.yaml"
    conf.write_text(re.sub(r"(?m)^lr: .*$", "lr: 0.0123", conf.read_text()))
    assert stale_keys(project) == ["tasks.defects.model.lr"]
    write_params(project)
    assert stale_keys(project) == []
    assert load_params("defects", project).model.lr == 0.0123


def test_overrides_are_typed_and_interpolated_paths_follow_the_task(project: Project):
    cfg = compose(["data.brightness=0.7", "seed=3"], project)
    assert cfg.data.brightness == 0.7 and cfg.seed == 3
    assert cfg.paths.model == "data/defects/model"


def test_unknown_key_names_the_key_and_the_allowed_ones(project: Project):
    params = yaml.safe_load(project.params_file.read_text())["tasks"]["defects"]
    params["model"]["lrr"] = 0.1
    with pytest.raises(ConfigError) as e:
        check(params, source="params.yaml")
    msg = str(e.value)
    assert "model.lrr" in msg and "lr" in msg and "batch_size" in msg


def test_bad_value_type_names_the_key(project: Project):
    with pytest.raises(ConfigError, match=r"data\.blur"):
        compose(["data.blur=very"], project)


def test_unknown_task_lists_the_installed_tasks_and_how_to_register():
    from liveml.tasks import GROUP, task_names

    with pytest.raises(ConfigError) as e:
        check({"task": {"name": "nope"}})
    assert f"installed tasks: {', '.join(task_names())}" in str(e.value)
    assert GROUP in str(e.value) and "pip install -e ." in str(e.value)


def test_bad_logger_mode_lists_allowed_modes(project: Project):
    with pytest.raises(ConfigError, match="offline, online, disabled"):
        compose(["logger.mode=sometimes"], project)


def test_fingerprint_view_ignores_logger_and_paths(project: Project):
    a = fingerprint_view(compose(project=project))
    b = fingerprint_view(compose(["logger.mode=disabled", "paths.runs=elsewhere"], project))
    c = fingerprint_view(compose(["model.lr=0.01"], project))
    assert a == b and a != c


def test_check_config_stage_stops_on_stale_params_with_the_fix(project: Project):
    conf = project.conf_dir / "trainer" / "cpu.yaml"
    conf.write_text(conf.read_text().replace("max_epochs:", "max_epochs: 99 #"))
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    env.pop("DVC_EXP_BASELINE_REV", None)
    run = subprocess.run(
        [sys.executable, "-m", "liveml.stages.check_config"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "trainer.max_epochs" in run.stderr and "liveml params" in run.stderr
    write_params(project)
    ok = subprocess.run(
        [sys.executable, "-m", "liveml.stages.check_config"], env=env, capture_output=True
    )
    assert ok.returncode == 0
