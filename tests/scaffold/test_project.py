"""A generated project as its user runs it: its own venv with liveml's wheel (layered on this
venv, so offline), `make test`, `liveml new-task` + reinstall, and `make repro` end to end.

Slow (each a minute or more on 2 cores): `pytest -m slow tests/scaffold`.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from liveml.cli import main

pytestmark = pytest.mark.slow


def test_generated_tests_pass_and_a_new_task_registers_after_reinstall(
    tmp_path, layered_venv, run_make, project_env, monkeypatch
):
    root = tmp_path / "shop"
    assert main(["init", str(root), "--task", "churn"]) == 0
    python = layered_venv(root)

    done = run_make(root, "test")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "9 passed" in done.stdout
    lock = (root / "requirements.lock").read_text()  # written from the venv: it pins liveml
    assert "liveml" in lock and "torch==" in lock

    monkeypatch.chdir(root)
    assert main(["new-task", "scoring"]) == 0
    done = run_make(root, "test")  # pyproject.toml changed: make reinstalls the project first
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "18 passed" in done.stdout
    names = subprocess.run(
        [str(python), "-c", "from liveml.tasks import task_names; print(task_names())"],
        capture_output=True,
        text=True,
        env=project_env,
        check=True,
    ).stdout
    assert "'churn'" in names and "'scoring'" in names


def test_make_repro_runs_the_whole_pipeline_out_of_the_box(tmp_path, layered_venv, run_make):
    start = time.perf_counter()
    root = tmp_path / "shop"
    assert main(["init", str(root), "--task", "churn"]) == 0
    layered_venv(root)
    done = run_make(root, "repro")
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"liveml init -> end of the first `make repro`: {elapsed:.0f} s")

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert {f"churn_{s}" for s in ("generate", "validate", "train", "evaluate", "export")} <= set(
        stages
    )
    metrics = json.loads((root / "metrics" / "churn.json").read_text())
    assert metrics["accuracy"] >= 0.8 and metrics["meets_scope"]
    card = json.loads((root / "data" / "churn" / "export" / "model_card.json").read_text())
    assert card["classes"] == ["a", "b", "c"] and card["scope"]["meets_scope"]
    assert (root / "data" / "churn" / "reference").is_dir()

    again = run_make(root, "repro")  # nothing changed: nothing re-runs
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Running stage 'churn_train'" not in again.stdout
