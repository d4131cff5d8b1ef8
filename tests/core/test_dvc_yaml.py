"""dvc.yaml is generated: stage names, commands, params, paths and code deps from one
definition, for liveml's own repo (code deps) and for a user's project with liveml installed
from a wheel (the lock file pins it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from liveml.core import pipeline
from liveml.core.config import pipeline_tasks
from liveml.core.project import Project

REPO = Path(__file__).resolve().parents[2]
TASKS = pipeline_tasks(Project(REPO))
BIN = Path(sys.executable).parent


def stages_of(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def test_every_task_gets_the_six_stages_and_the_guard():
    stages = stages_of(REPO)
    want = [pipeline.GUARD, *(f"{t}_{s}" for t in TASKS for s in pipeline.STAGES)]
    assert list(stages) == want
    assert stages[pipeline.GUARD]["always_changed"] is True
    for task in TASKS:
        for stage in pipeline.STAGES:
            s = stages[f"{task}_{stage}"]
            assert s["cmd"] == f"python -m liveml.stages.{stage} {task}"
            assert all(p.startswith(f"tasks.{task}.") for p in s.get("params", []))
            outs = [*s.get("outs", []), *s.get("metrics", [])]
            names = [o if isinstance(o, str) else next(iter(o)) for o in outs]
            assert all(o.startswith(f"${{tasks.{task}.paths.") for o in names)
            assert f"src/liveml/stages/{stage}.py" in s["deps"]


def test_dvc_views_list_headline_metrics_and_explicit_plots_only():
    """`metrics:` holds only each task's headline file; the data report and the evaluate folder
    are uncached outs DVC neither lists nor draws; no stage has a `plots:` folder (DVC would
    draw every file in it with a default template); every top-level plot names its template,
    fields and title."""
    content = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = content["stages"]
    for task in TASKS:

        def path(key: str, task: str = task) -> str:
            return f"${{tasks.{task}.paths.{key}}}"

        metrics = [m for s in stages.values() for m in s.get("metrics", [])]
        assert {next(iter(m)) for m in metrics if task in next(iter(m))} == {path("metrics")}
        assert {path("data_report"): {"cache": False}} in stages[f"{task}_validate"]["outs"]
        assert {path("plots"): {"cache": False}} in stages[f"{task}_evaluate"]["outs"]
        assert path("plots") in stages[f"{task}_export"]["deps"]  # the card's metrics
    assert not [name for name, s in stages.items() if "plots" in s]
    assert content["plots"]
    for entry in content["plots"]:
        ((name, plot),) = entry.items()
        assert {"template", "x", "y", "title"} <= set(plot), name


def test_a_task_is_added_by_conf_pipeline_yaml_alone(tmp_path: Path):
    """Drop a task from conf/pipeline.yaml: dvc.yaml follows, and the stale check says so."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    project = Project(tmp_path)
    assert pipeline.stale(project) == []  # a copy of liveml's repo: the same code deps
    keep, *dropped = TASKS
    if not dropped:
        pytest.skip("the pipeline has one task: nothing to drop")
    text = (tmp_path / "conf" / "pipeline.yaml").read_text()
    lines = [
        line
        for line in text.splitlines(keepends=True)
        if not any(f"tasks.{d}." in line for d in dropped)
    ]
    body = yaml.safe_load("".join(lines))
    body["tasks"] = {keep: body["tasks"][keep]}
    (tmp_path / "conf" / "pipeline.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    stale = pipeline.stale(project)
    gone = [s for s in stale if s.startswith("stage ")]
    assert all(s.endswith("(not generated)") for s in gone)
    assert {s.split()[1] for s in gone} == {f"{d}_{s}" for d in dropped for s in pipeline.STAGES}
    assert set(stale) - set(gone) <= {"plots"}  # the dropped tasks' plots go too
    pipeline.write(project)
    assert pipeline.stale(project) == []
    assert [k for k in stages_of(tmp_path) if k != pipeline.GUARD] == [
        f"{keep}_{s}" for s in pipeline.STAGES
    ]
    assert (tmp_path / "feedback" / keep / "README.md").is_file()


def user_project(root: Path, task: str) -> Path:
    """A user's project: conf/ holding only config.yaml, pipeline.yaml and the task's own
    groups (task, model, data, trainer); trainer/logger/paths/monitor come from liveml."""
    conf = root / "conf"
    for group in ("task", "data", "trainer"):
        (conf / group).mkdir(parents=True)
        shutil.copy(REPO / "conf" / group / f"{task}.yaml", conf / group)
    shutil.copytree(REPO / "conf" / "model", conf / "model")
    groups = {"task": task, "model": task, "data": task, "trainer": task}
    groups |= {"logger": "wandb", "paths": "default", "monitor": "default"}
    run_defaults = [{g: ("${task}" if o == task and g != "task" else o)} for g, o in groups.items()]
    (conf / "config.yaml").write_text(
        yaml.safe_dump({"defaults": [*run_defaults, "_self_"], "seed": 0}, sort_keys=False)
    )
    pipe_defaults = [{f"{g}@tasks.{task}.{g}": o} for g, o in groups.items()]
    (conf / "pipeline.yaml").write_text(
        yaml.safe_dump(
            {"defaults": [*pipe_defaults, "_self_"], "tasks": {task: {"seed": 0}}},
            sort_keys=False,
        )
    )
    return root


def installed_env(site: Path) -> dict[str, str]:
    """Run liveml from `site` (a site-packages folder) instead of this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEML_ROOT", "DVC_EXP_BASELINE_REV")}
    return {**env, "PYTHONPATH": str(site), "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def check_user_project(proj: Path, site: Path) -> None:
    env = installed_env(site)
    out = run(["liveml", "params"], proj, env)
    assert out.returncode == 2
    assert "outside the project" in out.stderr and "requirements.lock" in out.stderr
    assert not (proj / "params.yaml").exists() and not (proj / "dvc.yaml").exists()

    (proj / "requirements.lock").write_text("liveml==0.1.0\n")
    out = run(["liveml", "params"], proj, env)
    assert out.returncode == 0, out.stderr
    task = next(iter(yaml.safe_load((proj / "params.yaml").read_text())["tasks"]))
    params = yaml.safe_load((proj / "params.yaml").read_text())["tasks"][task]
    assert params["trainer"]["max_steps"] == -1 and params["monitor"]["window"] > 0
    for name, stage in stages_of(proj).items():
        if name != pipeline.GUARD:
            assert stage["deps"][0] == "requirements.lock", name
            assert all(d == "requirements.lock" or d.startswith("${") for d in stage["deps"])
    assert (proj / params["paths"]["feedback"] / "README.md").is_file()
    guard = run([sys.executable, "-m", "liveml.stages.check_config"], proj, env)
    assert guard.returncode == 0, guard.stderr


def test_a_user_project_with_liveml_installed_elsewhere_depends_on_its_lock_file(tmp_path):
    """liveml's packages copied into a site-packages folder stand for a wheel install."""
    site = tmp_path / "venv" / "lib" / "site-packages"
    for pkg in ("liveml", "hydra_plugins"):
        shutil.copytree(
            REPO / "src" / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__")
        )
    check_user_project(user_project(tmp_path / "proj", TASKS[0]), site)


@pytest.mark.slow  # builds liveml's wheel (10-30 s), then one DVC experiment
def test_the_wheel_ships_the_config_groups_and_dvc_composes_with_them(tmp_path: Path):
    build = tmp_path / "build"  # what the wheel is built from: its metadata and src/
    shutil.copytree(
        REPO / "src", build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, build / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(build)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("liveml-*.whl")
    site = tmp_path / "venv" / "lib" / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(site)
    shipped = {
        p.relative_to(REPO / "src").as_posix() for p in (REPO / "src/liveml/conf").rglob("*.yaml")
    }
    assert shipped and shipped <= names
    assert "hydra_plugins/liveml_searchpath/searchpath.py" in names

    task = TASKS[0]
    proj = user_project(tmp_path / "proj", task)
    check_user_project(proj, site)
    env = installed_env(site)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "hydra.enabled", "true"],
        ["dvc", "config", "hydra.config_name", "pipeline"],
        ["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", "add", "-A"],
        ["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", "commit", "-qm", "project"],
    ):
        assert run(cmd, proj, env).returncode == 0, cmd
    # DVC composes conf/pipeline.yaml itself; a tiny recipe keeps the generate stage quick.
    sets = [f"tasks.{task}.data.n_{s}=4" for s in ("train", "val", "test")]
    out = run(
        ["dvc", "exp", "run", *(a for s in sets for a in ("-S", s)), f"{task}_generate"],
        proj,
        env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    composed = yaml.safe_load((proj / "params.yaml").read_text())["tasks"][task]
    assert composed["data"]["n_train"] == 4 and composed["trainer"]["max_steps"] == -1
