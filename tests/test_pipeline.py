"""The whole DVC pipeline on a tiny config, in a temporary git + DVC copy of the repo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from liveml.core.config import pipeline_tasks
from liveml.core.project import Project

from tinyrepo import REPO, STAGES, ran_stages, run, set_values, traces

# The tasks the pipeline builds (conf/pipeline.yaml); the tiny repo is a copy of this one.
TASKS = pipeline_tasks(Project(REPO))


@pytest.fixture(scope="module")
def project(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy of the tiny pipeline repo (its tests edit and re-run it)."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    return root


def params(project: Path, task: str) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())["tasks"][task]


def test_repro_builds_every_stage_of_every_task(project: Path):
    first = (project / "first_repro.log").read_text()
    ran = ran_stages(subprocess.CompletedProcess([], 0, first, ""))
    assert {f"{task}_{stage}" for task in TASKS for stage in STAGES} <= ran


def covering(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(f"{d.rstrip('/')}/") for d in deps)


def test_every_stage_depends_on_all_the_project_code_it_imports(tiny_pipeline: Path):
    """Each stage process of the first repro recorded the files of every module it imported
    (tinyrepo's import trace); every one of them that belongs to the project must be covered
    by a dep of that stage in the generated dvc.yaml (the file itself or a folder above it)."""
    stages = yaml.safe_load((tiny_pipeline / "dvc.yaml").read_text())["stages"]
    # Stage processes may import liveml from this checkout (the editable install) or from the
    # tiny copy of it: either way, a file's path inside the project is what DVC hashes.
    roots = [tiny_pipeline.resolve(), REPO.resolve()]
    seen, uncovered = set(), {}
    for trace in traces(tiny_pipeline):
        argv = trace["argv"]
        module = Path(argv[0])
        if module.parent.name != "stages" or module.stem == "check_config" or len(argv) != 2:
            continue  # DVC itself, git hooks, the config guard
        name = f"{argv[1]}_{module.stem}"
        seen.add(name)
        deps = stages[name]["deps"]
        for file in map(Path, trace["files"]):
            root = next((r for r in roots if file.is_relative_to(r)), None)
            if root is None:
                continue
            rel = file.relative_to(root).as_posix()
            if (tiny_pipeline / rel).is_file() and not covering(rel, deps):
                uncovered.setdefault(name, []).append(rel)
    assert seen == {f"{task}_{stage}" for task in TASKS for stage in STAGES}
    assert uncovered == {}, "stages import project files their deps miss (fix DEFINITION in "
    "liveml/core/pipeline.py)"


@pytest.mark.parametrize("task", TASKS)
def test_each_stage_depends_on_its_whole_task_package(tiny_pipeline: Path, task: str):
    import inspect

    from liveml.tasks import get_task

    package = Path(inspect.getfile(type(get_task(task)))).parent
    rel = package.resolve().relative_to(REPO.resolve()).as_posix()
    stages = yaml.safe_load((tiny_pipeline / "dvc.yaml").read_text())["stages"]
    for stage in STAGES:
        assert rel in stages[f"{task}_{stage}"]["deps"], stage


@pytest.mark.parametrize("task", TASKS)
def test_model_card_and_run_record_carry_the_lineage(project: Path, task: str):
    paths = params(project, task)["paths"]
    record = json.loads((project / paths["model"] / "run.json").read_text())
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    data_out = lock["stages"][f"{task}_generate"]["outs"][0]
    assert record["task"] == task
    assert record["data"][paths["data"]] == data_out["md5"]
    card = json.loads((project / paths["export"] / "model_card.json").read_text())
    assert card["task"] == task
    assert card["lineage"]["fingerprint"] == record["fingerprint"]
    assert card["lineage"]["code"]["commit"] == record["code"]["commit"]
    assert {e["format"] for e in card["exports"]} == {"torchscript", "onnx"}
    out = run(["liveml", "lineage", paths["model"], "--json"], project).stdout
    assert json.loads(out)["run_id"] == record["run_id"]


@pytest.mark.parametrize("task", TASKS)
def test_metrics_and_data_report_meet_the_contract(project: Path, task: str):
    from liveml.tasks import get_task

    cfg = params(project, task)
    report = json.loads((project / cfg["paths"]["data_report"]).read_text())
    assert report["problems"] == []
    # The headline file DVC lists: the headline metric, the targets' metrics, meets_scope.
    metrics = json.loads((project / cfg["paths"]["metrics"]).read_text())
    contract = get_task(task)
    targets = list(cfg["task"]["targets"])
    for key in (contract.headline.metric, *targets):
        assert isinstance(metrics[key], float | int), key
    assert isinstance(metrics["meets_scope"], bool)
    assert set(metrics) <= {contract.headline.metric, *contract.dvc_metrics, *targets,
                            "meets_scope"}  # fmt: skip
    # Every metric, in the evaluate folder next to the plot data; the model card holds them.
    every = json.loads((project / cfg["paths"]["plots"] / "evaluation.json").read_text())
    assert {k: every[k] for k in metrics} == metrics
    assert isinstance(every["latency_p50_ms"], float | int)
    assert set(every["scope"]) == set(targets)
    card = json.loads((project / cfg["paths"]["export"] / "model_card.json").read_text())
    assert card["metrics"] == every


def test_nothing_changed_means_nothing_runs(project: Path):
    out = run(["dvc", "repro"], project)
    assert ran_stages(out) == {"check_config"}
    # Only the config guard reports itself (it is always_changed by design).
    status = run(["dvc", "status"], project).stdout
    assert status.strip().splitlines() == ["check_config:", "\talways changed"]
    # Bytecode Python writes next to the code after the stage ran (any later import does) is
    # not a change of the code: .dvcignore keeps it out of the dependency hashes.
    pyc = project / "src" / "liveml" / "data" / "__pycache__" / "later.cpython-311.pyc"
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(b"\x00bytecode")
    try:
        status = run(["dvc", "status"], project).stdout
        assert status.strip().splitlines() == ["check_config:", "\talways changed"]
    finally:
        pyc.unlink()


def test_conf_edit_without_params_stops_with_the_fix(project: Path):
    set_values(project / "conf", f"trainer/{TASKS[0]}.yaml", {"max_epochs": 3})
    try:
        out = run(["dvc", "repro"], project, check=False)
        assert out.returncode != 0
        assert "trainer.max_epochs" in out.stderr + out.stdout
        assert "liveml params" in out.stderr + out.stdout
        assert ran_stages(out) <= {"check_config"}
    finally:
        run(["git", "checkout", "conf"], project)


@pytest.mark.slow
def test_a_task_trainer_edit_reruns_exactly_that_task_model_stages(project: Path):
    task = TASKS[0]
    set_values(project / "conf", f"trainer/{task}.yaml", {"max_epochs": 3})
    try:
        run(["liveml", "params"], project)
        out = run(["dvc", "repro"], project)
        # Only this task's model depends on its trainer settings: other tasks are left alone.
        assert ran_stages(out) == {
            "check_config",
            f"{task}_train",
            f"{task}_evaluate",
            f"{task}_export",
            f"{task}_reference",  # the reference profile belongs to the model
        }
        paths = params(project, task)["paths"]
        record = json.loads((project / paths["model"] / "run.json").read_text())
        assert record["config"]["trainer"]["max_epochs"] == 3 and record["epochs"] == 3
    finally:
        run(["git", "checkout", "conf", "params.yaml", "dvc.yaml", "dvc.lock", "metrics"], project)
        run(["dvc", "checkout", "-f"], project)


@pytest.mark.slow
def test_dvc_exp_run_with_set_param_composes_from_conf(project: Path):
    """DVC's own Hydra composition of conf/pipeline.yaml finds liveml's packaged groups."""
    task = TASKS[0]
    out = run(["dvc", "exp", "run", "-S", f"tasks.{task}.seed=1", "-n", "seed1"], project)
    assert "seed1" in out.stdout + out.stderr
    show = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    (exp,) = [e for b in show for e in b.get("experiments") or [] if e["name"] == "seed1"]
    composed = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["tasks"][task]
    assert composed["seed"] == 1
    # Keys that only liveml's packaged groups hold came through DVC's composition.
    assert composed["trainer"]["max_steps"] == -1 and "reference_size" in composed["monitor"]
