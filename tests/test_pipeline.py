"""The whole DVC pipeline on a tiny config, in a temporary git + DVC copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Recipes small enough to run both tasks' pipelines end to end in about a minute.
TINY = {
    "data/defects.yaml": {"image_size": 64, "n_train": 24, "n_val": 8, "n_test": 8},
    "model/fcos_tiny.yaml": {"channels": [8, 16, 16, 32], "fpn_channels": 32, "batch_size": 8},
    "data/speech.yaml": {"n_train": 16, "n_val": 8, "n_test": 8},
    "model/crnn_ctc.yaml": {"rnn_hidden": 32, "rnn_layers": 1, "batch_size": 8},
    "trainer/cpu.yaml": {"max_epochs": 2},
}
STAGES = ("generate", "validate", "train", "evaluate", "export")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "offline"}
    for var in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME", "LIVEML_ROOT"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def git(repo: Path, *args: str) -> None:
    run(["git", "-c", "user.email=ci@liveml", "-c", "user.name=ci", *args], repo)


def set_values(conf: Path, rel: str, values: dict) -> None:
    path = conf / rel
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def ran_stages(out: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", out.stdout))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo holding the project's tracked files, with a tiny recipe, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    for rel, values in TINY.items():
        set_values(root / "conf", rel, values)
    run(["git", "init", "-q", "-b", "main"], root)
    run(["liveml", "params"], root)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny project")
    first = run(["dvc", "repro"], root)
    (root / "first_repro.log").write_text(first.stdout)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first repro")
    return root


def test_repro_builds_every_stage_of_both_tasks(project: Path):
    first = (project / "first_repro.log").read_text()
    ran = ran_stages(subprocess.CompletedProcess([], 0, first, ""))
    assert {f"{task}_{stage}" for task in ("defects", "speech") for stage in STAGES} <= ran


@pytest.mark.parametrize("task", ["defects", "speech"])
def test_model_card_and_run_record_carry_the_lineage(project: Path, task: str):
    record = json.loads((project / f"data/{task}/model/run.json").read_text())
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    data_out = lock["stages"][f"{task}_generate"]["outs"][0]
    assert record["task"] == task
    assert record["data"][f"data/{task}/raw"] == data_out["md5"]
    card = json.loads((project / f"data/{task}/export/model_card.json").read_text())
    assert card["task"] == task
    assert card["lineage"]["fingerprint"] == record["fingerprint"]
    assert card["lineage"]["code"]["commit"] == record["code"]["commit"]
    assert {e["format"] for e in card["exports"]} == {"torchscript", "onnx"}
    out = run(["liveml", "lineage", f"data/{task}/model", "--json"], project).stdout
    assert json.loads(out)["run_id"] == record["run_id"]


def test_defects_metrics_and_data_report(project: Path):
    report = json.loads((project / "metrics/defects_data.json").read_text())
    assert report["ok"] is True
    metrics = json.loads((project / "metrics/defects.json").read_text())
    for key in ("map_50", "map", "latency_p50_ms", "latency_p95_ms", "throughput_ips"):
        assert isinstance(metrics[key], float | int), key
    assert "meets_scope" in metrics


def test_speech_metrics_and_data_report(project: Path):
    report = json.loads((project / "metrics/speech_data.json").read_text())
    assert report["problems"] == []
    metrics = json.loads((project / "metrics/speech.json").read_text())
    for key in ("wer", "cer", "latency_p50_ms", "latency_p95_ms", "rtf", "throughput_ups"):
        assert isinstance(metrics[key], float | int), key
    assert set(metrics["scope"]) == {"cer", "latency_p95_ms", "rtf"}
    assert (project / "metrics/speech_plots/cer_by_snr.csv").is_file()


def test_nothing_changed_means_nothing_runs(project: Path):
    out = run(["dvc", "repro"], project)
    assert ran_stages(out) == {"check_config"}
    # Only the config guard reports itself (it is always_changed by design).
    status = run(["dvc", "status"], project).stdout
    assert status.strip().splitlines() == ["check_config:", "\talways changed"]


def test_conf_edit_without_params_stops_with_the_fix(project: Path):
    set_values(project / "conf", "model/fcos_tiny.yaml", {"lr": 0.0123})
    try:
        out = run(["dvc", "repro"], project, check=False)
        assert out.returncode != 0
        assert "model.lr" in out.stderr + out.stdout and "liveml params" in out.stderr + out.stdout
        assert ran_stages(out) <= {"check_config"}
    finally:
        run(["git", "checkout", "conf"], project)


def test_a_hyperparameter_edit_reruns_exactly_the_affected_stages(project: Path):
    set_values(project / "conf", "model/fcos_tiny.yaml", {"lr": 0.0123})
    try:
        run(["liveml", "params"], project)
        out = run(["dvc", "repro"], project)
        # Only the defects model depends on that value: the speech task is left alone.
        assert ran_stages(out) == {
            "check_config",
            "defects_train",
            "defects_evaluate",
            "defects_export",
        }
        record = json.loads((project / "data/defects/model/run.json").read_text())
        assert record["config"]["model"]["lr"] == 0.0123
    finally:
        run(["git", "checkout", "conf", "params.yaml", "dvc.lock", "metrics"], project)
        run(["dvc", "checkout", "-f"], project)


def test_dvc_exp_run_with_set_param_composes_from_conf(project: Path):
    out = run(["dvc", "exp", "run", "-S", "tasks.defects.model.lr=0.003", "-n", "lr3"], project)
    assert "lr3" in out.stdout + out.stderr
    show = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(show)
    assert '"lr": 0.003' in text
