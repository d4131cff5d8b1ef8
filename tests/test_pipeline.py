"""The whole DVC pipeline on a tiny config, in a temporary git + DVC copy of the repo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tinyrepo import STAGES, ran_stages, run, set_values


@pytest.fixture(scope="module")
def project(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy of the tiny pipeline repo (its tests edit and re-run it)."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
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
            "defects_reference",  # the reference profile belongs to the model
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
