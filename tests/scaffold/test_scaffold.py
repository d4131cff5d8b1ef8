"""`liveml init` and `liveml new-task`: the files they write, the names they refuse (with the
fix), the wheel that carries the templates, and the skeleton task running against this
checkout's liveml in-process (registered through a real entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from liveml.cli import main
from liveml.scaffold.project import PIPELINE_GROUPS, ScaffoldError, with_pipeline_task

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"
TASK_MODULES = ("__init__", "config", "data", "model", "serving")


def init(root: Path, task: str = "churn", *extra: str) -> int:
    return main(["init", str(root), "--task", task, *extra])


def project_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith((".git/", ".dvc/tmp/"))
    }


def task_files(package: str, task: str) -> set[str]:
    return {
        *(f"src/{package}/{task}/{m}.py" for m in TASK_MODULES),
        *(f"conf/{group}/{task}.yaml" for group in ("task", "model", "data", "trainer")),
        f"tests/test_{task}.py",
    }


def assert_lint_clean(root: Path) -> None:
    """The generated code passes ruff with the project's own settings (what `make lint` runs)."""
    if not RUFF.is_file():
        pytest.skip("ruff is not installed next to this python")
    for args in (["check", "src", "tests"], ["format", "--check", "src", "tests"]):
        out = subprocess.run([str(RUFF), *args], cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_init_writes_a_complete_project(tmp_path, capsys):
    root = tmp_path / "My-Proj"
    assert init(root) == 0
    out = capsys.readouterr().out
    assert "cd My-Proj" in out or str(root) in out
    assert "make repro" in out

    assert project_files(root) == {
        ".ci/run",
        ".dvc/.gitignore",
        ".dvc/config",
        ".dvcignore",
        ".gitignore",
        "Makefile",
        "README.md",
        "conf/config.yaml",
        "conf/pipeline.yaml",
        "pyproject.toml",
        "src/my_proj/__init__.py",
        *task_files("my_proj", "churn"),
    }
    assert os.access(root / ".ci" / "run", os.X_OK)
    for path in project_files(root):
        assert "{{" not in (root / path).read_text(), path  # every placeholder filled
        if path.endswith(".py"):
            compile((root / path).read_text(), path, "exec")

    # git and DVC: the project is its own repo, DVC composes conf/pipeline.yaml (dvc exp -S).
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True)
    assert Path(top.stdout.decode().strip()) == root.resolve()
    dvc_config = (root / ".dvc" / "config").read_text()
    assert "[hydra]" in dvc_config and "config_name = pipeline" in dvc_config

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert pyproject["name"] == "my-proj"
    assert pyproject["entry-points"]["liveml.tasks"] == {"churn": "my_proj.churn:ChurnTask"}
    assert any(dep.startswith("liveml>=") for dep in pyproject["dependencies"])

    config = yaml.safe_load((root / "conf" / "config.yaml").read_text())
    assert config["defaults"][0] == {"task": "churn"}
    pipeline = yaml.safe_load((root / "conf" / "pipeline.yaml").read_text())
    assert pipeline["tasks"] == {"churn": {"seed": 0}}
    assert pipeline["defaults"] == [
        *({f"{g}@tasks.churn.{g}": option or "churn"} for g, option in PIPELINE_GROUPS),
        "_self_",
    ]
    makefile = (root / "Makefile").read_text()
    assert "liveml params" in makefile and "dvc repro" in makefile
    assert_lint_clean(root)


def test_new_task_adds_files_entry_point_and_pipeline_lines(tmp_path, monkeypatch, capsys):
    root = tmp_path / "proj"
    assert init(root) == 0
    monkeypatch.chdir(root / "src")  # anywhere inside the project
    capsys.readouterr()
    assert main(["new-task", "scoring"]) == 0
    out = capsys.readouterr().out
    assert "pip install -e ." in out and "reinstall" in out

    assert project_files(root) >= task_files("proj", "scoring") | task_files("proj", "churn")
    eps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    assert eps["liveml.tasks"] == {
        "churn": "proj.churn:ChurnTask",
        "scoring": "proj.scoring:ScoringTask",
    }
    pipeline = yaml.safe_load((root / "conf" / "pipeline.yaml").read_text())
    assert pipeline["tasks"] == {"churn": {"seed": 0}, "scoring": {"seed": 0}}
    assert pipeline["defaults"][-1] == "_self_" and len(pipeline["defaults"]) == 15
    assert {"trainer@tasks.scoring.trainer": "scoring"} in pipeline["defaults"]
    assert "class ScoringTask(Task):" in (root / "src/proj/scoring/__init__.py").read_text()
    assert_lint_clean(root)

    # The same name again: refused before anything is written.
    before = (root / "pyproject.toml").read_text()
    assert main(["new-task", "scoring"]) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "fix" in err
    assert (root / "pyproject.toml").read_text() == before


@pytest.mark.parametrize(
    ("folder", "args", "expected"),
    [
        ("proj", ["--task", "My-Task"], ["not allowed", "'my_task'"]),
        ("proj", ["--task", "class"], ["not allowed"]),
        ("proj", ["--task", "defects"], ["is taken", "liveml.tasks.defects:DefectsTask"]),
        ("proj", ["--task", "cpu"], ["packaged conf/trainer/cpu.yaml", "another name"]),
        ("123", ["--task", "churn"], ["--package NAME"]),
        ("proj", ["--task", "churn", "--package", "json"], ["already importable", "--package"]),
        ("proj", ["--task", "churn", "--package", "My-Pkg"], ["not a valid package name"]),
    ],
)
def test_init_refuses_bad_names_naming_the_fix(tmp_path, capsys, folder, args, expected):
    root = tmp_path / folder
    assert main(["init", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liveml init: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert not root.exists()  # nothing half-written


def test_init_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "notes.txt").write_text("mine\n")
    assert init(tmp_path / "proj") == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "liveml new-task" in err
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert init(tmp_path / "empty") == 0  # an empty folder is fine


def test_new_task_outside_a_project_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIVEML_ROOT", raising=False)
    assert main(["new-task", "scoring"]) == 2
    err = capsys.readouterr().err
    assert "no liveml project" in err and "liveml init DIR --task scoring" in err


def test_a_pipeline_layout_it_cannot_edit_shows_the_lines_to_add():
    text = "defaults: [_self_]\ntasks: {churn: {seed: 0}}\n"
    with pytest.raises(ScaffoldError) as e:
        with_pipeline_task(text, "scoring")
    assert "model@tasks.scoring.model: scoring" in str(e.value)
    assert "    seed: 0" in str(e.value)


def test_wheel_carries_templates_packaged_conf_and_pages(liveml_wheel):
    names = set(zipfile.ZipFile(liveml_wheel).namelist())
    src = REPO / "src"
    wanted = [
        *(src / "liveml" / "scaffold" / "templates").rglob("*.tmpl"),
        *(src / "liveml" / "conf").rglob("*.yaml"),
        *(src / "liveml").rglob("*.html"),
        *(src / "hydra_plugins" / "liveml_searchpath").glob("*.py"),
    ]
    assert len(wanted) > 20
    missing = {p.relative_to(src).as_posix() for p in wanted} - names
    assert not missing, f"the wheel lacks {sorted(missing)}; fix: package-data in pyproject.toml"


def test_docs_show_the_skeleton_task_as_generated():
    """docs/tasks.md quotes the Task class `liveml init shop --task churn` writes, verbatim."""
    from liveml.scaffold.project import TEMPLATES, Names, render

    template = (TEMPLATES / "task" / "__init__.py.tmpl").read_text()
    task_class = render(template, Names("shop", "churn").values)
    assert task_class in (REPO / "docs" / "tasks.md").read_text()


# --- the skeleton task in-process ------------------------------------------------------------


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """Factory: `registered(root, package, tasks)` makes the project's tasks importable and
    registers their entry points the way an editable install does (a .dist-info folder on
    sys.path), for this test only."""
    import importlib

    from liveml import tasks
    from liveml.core import config

    def clear() -> None:
        tasks.installed.cache_clear()
        tasks.get_task.cache_clear()
        config.root_schema.cache_clear()

    def register(root: Path, package: str, names: list[str]) -> None:
        site = tmp_path / "site"
        info = site / f"{package}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1.0\n")
        entries = "".join(f"{n} = {package}.{n}:{n.title().replace('_', '')}Task\n" for n in names)
        (info / "entry_points.txt").write_text("[liveml.tasks]\n" + entries)
        monkeypatch.syspath_prepend(str(root / "src"))
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        clear()

    yield register
    for name in [m for m in sys.modules if m.split(".")[0] == "skel"]:
        del sys.modules[name]
    clear()


def test_skeleton_trains_evaluates_exports_and_profiles(tmp_path, registered, monkeypatch):
    """The generated task through liveml's own code paths: generate, validate, `train` (lineage,
    checkpoints, run record), evaluate, export (TorchScript + ONNX checked against eager),
    the drift monitor's draws and profile, a feedback version merged into the data."""
    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.data.feedback import merge, write_version
    from liveml.monitoring.monitor import draw_inputs, profile_inputs
    from liveml.release.export import export_task
    from liveml.tasks import get_task
    from liveml.training.run import load_trained, train

    root = tmp_path / "skel"
    assert init(root) == 0
    registered(root, "skel", ["churn"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    project = Project(root)
    small = ["data.n_train=120", "data.n_val=30", "data.n_test=30", "trainer.max_epochs=3"]
    small += ["trainer.log_every_n_steps=1"]
    cfg = compose(["task=churn", *small, "trainer.num_threads=1", "logger.mode=disabled"], project)
    task = get_task("churn")
    data = project.path(cfg.paths.data)
    assert task.generate(cfg, data)["splits"] == {"train": 120, "val": 30, "test": 30}
    assert task.validate(cfg, data)["problems"] == []

    record = train(cfg, project=project)
    assert record["task"] == "churn" and record["weights_sha256"]
    module, _ = load_trained(project.path(cfg.paths.model))
    metrics = task.evaluate(cfg, module, data, tmp_path / "plots")
    assert metrics["accuracy"] >= 0.8  # three epochs on well-separated blobs
    exports = export_task(task, module, task.export_inputs(cfg, data), tmp_path / "export")
    assert {e["format"] for e in exports} == {"torchscript", "onnx"}

    inputs = draw_inputs(task, cfg, 40, stream=0)
    assert len(set(inputs)) == 40
    profile, _ = profile_inputs(task, module, inputs)
    assert len(profile) == 40
    drifted = draw_inputs(task, cfg, 40, stream=0, scenario="shift", strength=1.0)
    assert drifted != inputs

    # Feedback: drifted inputs labelled by ground truth, a version in the task's layout, merged
    # into a copy of the data, which still validates (the merged inputs counted).
    drifted_cfg = compose(["task=churn", *small, "data.shift=2.0", "data.seed=7"], project)
    task.generate(drifted_cfg, tmp_path / "drifted")
    truth = task.ground_truth([tmp_path / "drifted"])
    assert len(truth) == 180 and {"class", "source"} <= set(next(iter(truth.values())))
    inputs = [e.input for e in task.read_split(tmp_path / "drifted", "test")]
    counts = write_version(task, inputs, truth, tmp_path / "feedback" / "v1", provenance={})
    assert counts["train"] + counts["test"] == 30
    merged = shutil.copytree(data, tmp_path / "merged")
    assert merge(task, merged, [tmp_path / "feedback" / "v1"])["train"] == counts["train"]
    assert task.validate(cfg, merged)["problems"] == []
    assert 0.0 <= task.quality(cfg, module, tmp_path / "feedback" / "v1", "test") <= 1.0


def test_new_task_is_registered_once_installed(tmp_path, registered, monkeypatch):
    """`liveml new-task` output is a second working task: after (simulated) reinstall both
    compose and run their data stages."""
    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.tasks import get_task, task_names

    root = tmp_path / "skel"
    assert init(root) == 0
    monkeypatch.chdir(root)
    assert main(["new-task", "scoring"]) == 0
    registered(root, "skel", ["churn", "scoring"])
    assert {"churn", "scoring"} <= set(task_names())
    small = ["task=scoring", "data.n_train=12", "data.n_val=6", "data.n_test=6"]
    cfg = compose(small, Project(root))
    out = tmp_path / "data"
    get_task("scoring").generate(cfg, out)
    assert get_task("scoring").validate(cfg, out)["problems"] == []
    shutil.rmtree(out)
