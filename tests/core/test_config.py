"""conf/ is the one source of truth: params.yaml and dvc.yaml are generated from it, every value
is written once in YAML (liveml's packaged groups or the project's), and bad config is named."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from liveml.core import pipeline
from liveml.core.config import (
    MISSING,
    PARAMS_HEADER,
    ConfigError,
    Target,
    check,
    compose,
    fingerprint_view,
    load_params,
    pipeline_tasks,
    root_schema,
    stale_keys,
    to_dict,
    write_params,
)
from liveml.core.project import Project

REPO = Path(__file__).resolve().parents[2]
# The tasks the repo's pipeline builds (conf/pipeline.yaml, through params.yaml).
TASKS = pipeline_tasks(Project(REPO))
PACKAGED = {
    "trainer": ["cpu", "ddp_cpu"],
    "logger": ["wandb"],
    "paths": ["default"],
    "monitor": ["default"],
    "hydra/launcher": ["parallel", "slurm"],
}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A throwaway copy of the repo's conf/, params.yaml and lock file (liveml's code lies
    outside it, so its generated stages depend on the lock file)."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    for name in ("params.yaml", "requirements.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    return Project(tmp_path)


def edit(path: Path, key: str, value) -> None:
    """Set top-level `key: value` in a YAML file, keeping its comments and defaults list."""
    text = path.read_text()
    line = f"{key}: {value}"
    new, n = re.subn(rf"(?m)^{key}: .*$", line, text)
    path.write_text(new if n else f"{text.rstrip()}\n{line}\n")


# --- generated files are in sync -------------------------------------------------------------


def test_committed_params_yaml_is_the_composition_of_conf():
    from liveml.tasks import task_names

    project = Project(REPO)
    assert stale_keys(project) == [], "run `liveml params` and commit params.yaml"
    assert project.params_file.read_text().startswith(PARAMS_HEADER)
    assert TASKS and set(TASKS) <= set(task_names())


def test_committed_dvc_yaml_is_generated():
    project = Project(REPO)
    assert pipeline.stale(project) == [], "run `liveml params` and commit dvc.yaml"
    assert (REPO / "dvc.yaml").read_text().startswith(pipeline.HEADER)


@pytest.mark.parametrize("task", TASKS)
def test_pipeline_task_equals_a_single_run_of_that_task(task: str):
    """The pipeline's model of a task and `python -m liveml.training task=<task>` share a config."""
    project = Project(REPO)
    assert to_dict(load_params(task, project)) == to_dict(compose([f"task={task}"], project))


# --- packaged groups -------------------------------------------------------------------------


def test_generic_groups_ship_in_the_package_not_in_the_repo_conf():
    conf = files("liveml.conf")
    for group, options in PACKAGED.items():
        for option in options:
            assert conf.joinpath(f"{group}/{option}.yaml").is_file(), f"{group}/{option}"
            assert not (REPO / "conf" / group / f"{option}.yaml").exists(), f"{group}/{option}"


def test_a_project_file_replaces_the_packaged_one(project: Project):
    logger = project.conf_dir / "logger" / "wandb.yaml"
    logger.parent.mkdir()
    logger.write_text("mode: disabled\nproject: mine\nentity: null\ndir: wandb\n")
    assert compose(project=project).logger.project == "mine"


def test_the_hydra_app_finds_the_packaged_groups(project: Project):
    """`python -m liveml.training` (@hydra.main) composes through the same search path."""
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    out = subprocess.run(
        [sys.executable, "-m", "liveml.training", "trainer=ddp_cpu", "--cfg", "job", "--resolve"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    job = yaml.safe_load(out.stdout)
    assert job["trainer"]["strategy"] == "ddp" and job["trainer"]["max_steps"] == -1
    assert job["monitor"] and job["paths"]["data"] == f"data/{job['task']['name']}/raw"


# --- every value written once ----------------------------------------------------------------


def _fields(schema: type, prefix: str = ""):
    """(dotted name, field) of every field of a dataclass schema, nested schemas included."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        yield f"{prefix}{f.name}", f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")


@pytest.mark.parametrize("task", TASKS)
def test_no_schema_field_has_a_default(task: str):
    """Schemas give types only; the value lives in YAML. (A scope Target's bound may be left
    out: no bound, not a default value.)"""
    fields = dict(_fields(root_schema(task)))
    assert {"trainer.max_steps", "model", "data", "task.targets"} <= set(fields)
    with_default = [
        name
        for name, f in fields.items()
        if f.default != MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []
    assert [f.default for f in dataclasses.fields(Target)] == [None, None]


def test_a_key_missing_from_yaml_names_the_key_and_its_file(project: Project):
    task = TASKS[0]
    own = project.conf_dir / "trainer" / f"{task}.yaml"
    own.write_text("max_epochs: 3\n")  # no longer extends liveml's `cpu`
    with pytest.raises(ConfigError) as e:
        compose([f"task={task}"], project)
    msg = str(e.value)
    assert "`trainer.max_steps`" in msg and "`trainer.accelerator`" in msg
    assert f"conf/trainer/{task}.yaml" in msg

    params = yaml.safe_load(project.params_file.read_text())["tasks"][task]
    key = next(iter(params["data"]))
    del params["data"][key]
    with pytest.raises(ConfigError, match=rf"`data\.{key}`.*conf/data/{task}\.yaml"):
        check(params, source="params.yaml")


# --- per-task trainer settings ---------------------------------------------------------------


def test_each_task_has_its_own_trainer_settings(project: Project):
    first, *others = TASKS
    edit(project.conf_dir / "trainer" / f"{first}.yaml", "max_epochs", 99)
    assert stale_keys(project) == [f"tasks.{first}.trainer.max_epochs"]
    write_params(project)
    assert load_params(first, project).trainer.max_epochs == 99
    assert compose([f"task={first}"], project).trainer.max_epochs == 99
    for task in others:
        assert load_params(task, project).trainer == compose([f"task={task}"], project).trainer
        assert load_params(task, project).trainer.max_epochs != 99


def test_ddp_trainer_replaces_the_task_trainer(project: Project):
    cfg = compose(["trainer=ddp_cpu"], project)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_threads) == ("ddp", 2, 1)
    assert cfg.trainer.max_epochs == compose(["trainer=cpu"], project).trainer.max_epochs


# --- composition and checks ------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_task_selects_its_own_model_data_trainer_and_paths(project: Project, task: str):
    cfg = compose([f"task={task}"], project)
    params = load_params(task, project)
    assert cfg.task.name == task and cfg.model == params.model and cfg.data == params.data
    assert cfg.paths.data == f"data/{task}/raw"


def test_load_params_of_an_unknown_task_lists_the_known_ones(project: Project):
    with pytest.raises(ConfigError, match=rf"has no `tasks\.nope`; it has: {', '.join(TASKS)}"):
        load_params("nope", project)


def test_write_params_then_edit_conf_is_detected_as_stale(project: Project):
    write_params(project)
    assert stale_keys(project) == []
    task = TASKS[0]
    model = load_params(task, project).model.name
    conf = project.conf_dir / "model" / f"{model}.yaml"
    edit(conf, "batch_size", 3)
    assert stale_keys(project) == [f"tasks.{task}.model.batch_size"]
    write_params(project)
    assert stale_keys(project) == []
    assert load_params(task, project).model.batch_size == 3


def test_overrides_are_typed_and_interpolated_paths_follow_the_task(project: Project):
    task = TASKS[0]
    cfg = compose([f"task={task}", "seed=3", "trainer.max_epochs=4"], project)
    assert cfg.seed == 3 and cfg.trainer.max_epochs == 4
    assert cfg.paths.model == f"data/{task}/model"


def test_unknown_key_names_the_key_and_the_allowed_ones(project: Project):
    params = yaml.safe_load(project.params_file.read_text())["tasks"][TASKS[0]]
    params["trainer"]["max_epoch"] = 3
    with pytest.raises(ConfigError) as e:
        check(params, source="params.yaml")
    msg = str(e.value)
    assert "trainer.max_epoch" in msg and "max_epochs" in msg and "num_threads" in msg


def test_bad_value_type_names_the_key(project: Project):
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        compose(["trainer.max_epochs=many"], project)


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
    c = fingerprint_view(compose(["seed=7"], project))
    assert a == b and a != c


# --- the check_config stage ------------------------------------------------------------------


def check_config(project: Project) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIVEML_ROOT": str(project.root)}
    env.pop("DVC_EXP_BASELINE_REV", None)
    return subprocess.run(
        [sys.executable, "-m", "liveml.stages.check_config"],
        env=env,
        capture_output=True,
        text=True,
    )


def test_check_config_stage_stops_on_stale_params_or_dvc_yaml_with_the_fix(project: Project):
    task = TASKS[0]
    write_params(project)
    assert check_config(project).returncode == 0

    edit(project.conf_dir / "trainer" / f"{task}.yaml", "max_epochs", 99)
    run = check_config(project)
    assert run.returncode == 1
    assert "trainer.max_epochs" in run.stderr and "liveml params" in run.stderr

    write_params(project)
    dvc_yaml = project.root / "dvc.yaml"
    edited = yaml.safe_load(dvc_yaml.read_text())
    edited["stages"][f"{task}_train"]["params"].remove(f"tasks.{task}.trainer")
    dvc_yaml.write_text(yaml.safe_dump(edited, sort_keys=False))
    run = check_config(project)
    assert run.returncode == 1
    assert "dvc.yaml is out of date" in run.stderr and f"stage {task}_train" in run.stderr
    assert "liveml params" in run.stderr
    write_params(project)
    assert check_config(project).returncode == 0


# --- a misspelt key gets liveml's message, never Hydra's `+key` advice -----------------------


def test_a_misspelt_override_lists_the_allowed_keys_not_hydras_advice(project: Project):
    from liveml.core.config import UnknownKeyError

    model_keys = sorted(to_dict(compose(project=project))["model"])
    with pytest.raises(UnknownKeyError) as e:
        compose(["model.lrr=1"], project)
    msg = str(e.value)
    assert "unknown key `model.lrr`" in msg and "Fix the spelling" in msg
    assert f"Allowed keys under `model`: {', '.join(model_keys)}." in msg
    assert "+model.lrr" not in msg and "append" not in msg
    assert isinstance(e.value, ConfigError)  # callers catching ConfigError still do

    # Added with `+` it passes Hydra and meets the schema check: the same message.
    with pytest.raises(UnknownKeyError, match=r"unknown key `model\.lrr`\. Allowed keys under"):
        compose(["+model.lrr=1"], project)
    # A misspelt group is named at the first level that does not exist.
    with pytest.raises(UnknownKeyError, match=r"unknown key `modle`\. Allowed keys under `<root>`"):
        compose(["modle.lr=1"], project)


def test_the_allowed_keys_are_those_of_the_selected_task(project: Project):
    from liveml.core.config import UnknownKeyError

    for task in TASKS:
        keys = sorted(to_dict(compose([f"task={task}"], project))["model"])
        with pytest.raises(UnknownKeyError) as e:
            compose([f"task={task}", "model.lrr=1"], project)
        assert e.value.allowed == keys and e.value.parent == "model"


def test_a_misspelt_pipeline_override_names_the_task_level(project: Project):
    from liveml.core.config import UnknownKeyError

    task = TASKS[0]
    with pytest.raises(UnknownKeyError) as e:
        write_params(project, [f"tasks.{task}.trainer.max_epoch=3"])
    assert e.value.key == f"tasks.{task}.trainer.max_epoch"
    assert "max_epochs" in e.value.allowed and "+tasks" not in str(e.value)


def test_unknown_key_error_survives_pickling():
    """Sweep launchers (joblib, submitit) send a failed job's exception between processes."""
    import pickle

    from liveml.core.config import UnknownKeyError

    e = UnknownKeyError("conf/", "model.lrr", "model", ["lr", "name"])
    again = pickle.loads(pickle.dumps(e))
    assert str(again) == str(e) and again.allowed == ["lr", "name"]
