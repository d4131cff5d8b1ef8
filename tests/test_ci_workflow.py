"""The GitHub Actions workflow and `.ci/model-diff`, the tiny pipeline on a base revision and on
a change, with DVC's metrics and params diff between them as a job summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyrepo import git, run, set_values

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
MODEL_DIFF = REPO / ".ci" / "model-diff"


def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean true.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps_running(job: dict, command: str) -> list[dict]:
    return [step for step in job["steps"] if command in step.get("run", "")]


def model_diff(repo: Path, *args: str, summary: Path) -> subprocess.CompletedProcess:
    """`.ci/model-diff` run from `repo` as in CI: the summary goes to $GITHUB_STEP_SUMMARY."""
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    return subprocess.run(
        [sys.executable, str(MODEL_DIFF), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def git_state(repo: Path) -> tuple[str, ...]:
    """What model-diff must leave alone in the caller: HEAD, refs, worktrees, working tree."""
    return tuple(
        run(cmd, repo).stdout
        for cmd in (
            ["git", "rev-parse", "HEAD"],
            ["git", "for-each-ref"],
            ["git", "worktree", "list"],
            ["git", "status", "--porcelain"],
        )
    )


def test_workflow_runs_the_ci_checks_on_python_311():
    flow = workflow()
    assert set(flow["on"]) == {"push", "pull_request"}
    assert flow["on"]["push"]["branches"] == ["main"]
    jobs = flow["jobs"]
    checks = [job for job in jobs.values() if steps_running(job, ".ci/run")]
    assert checks, "no job runs .ci/run"
    for job in jobs.values():
        pythons = [
            s["with"]["python-version"] for s in job["steps"] if "setup-python" in s.get("uses", "")
        ]
        assert pythons == ["3.11"]


def test_pull_requests_get_a_model_diff_against_their_base():
    job = workflow()["jobs"]["model-diff"]
    assert job["if"] == "github.event_name == 'pull_request'"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0, "the base branch must be fetched"
    (step,) = steps_running(job, ".ci/model-diff")
    assert step["env"]["BASE"] == "origin/${{ github.base_ref }}"
    assert '"$BASE"' in step["run"]
    # model-diff writes to $GITHUB_STEP_SUMMARY unless told another file.
    assert "--summary" not in step["run"]
    order = [s.get("run", "") for s in job["steps"]]
    assert order.index("make venv") < order.index(step["run"])
    assert os.access(MODEL_DIFF, os.X_OK)


def test_model_diff_names_an_unknown_base_and_the_fix(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    out = model_diff(repo, "origin/nowhere", summary=tmp_path / "summary.md")
    assert out.returncode == 1
    assert "unknown revision 'origin/nowhere'" in out.stderr
    assert "fetch-depth: 0" in out.stderr
    assert not (tmp_path / "summary.md").exists()


@pytest.fixture
def tiny_repo(tiny_pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the tiny pipeline: `main` is repro'd and committed, its DVC cache full."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    return root


@pytest.mark.slow  # 70-90 s (one defects retrain); the failure test runs the script by default
def test_model_diff_reports_a_hyperparameter_change(tiny_repo: Path, tmp_path: Path):
    git(tiny_repo, "checkout", "-q", "-b", "lr")
    set_values(tiny_repo / "conf", "model/fcos_tiny.yaml", {"lr": 0.0123})
    git(tiny_repo, "commit", "-qam", "defects lr 0.0123")
    before = git_state(tiny_repo)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")

    # main's results are in the copy's DVC cache: the base side only checks them out.
    out = model_diff(tiny_repo, "main", "--cache", str(tiny_repo / ".dvc/cache"), summary=summary)
    assert out.returncode == 0, out.stderr[-4000:]

    text = summary.read_text()
    assert text.startswith("earlier step\n## Model diff: `main`")
    params = text.split("### Params")[1]
    row = next(line for line in params.splitlines() if "tasks.defects.model.lr" in line)
    assert "0.004" in row and "0.0123" in row
    assert "speech" not in params
    metrics = text.split("### Metrics")[1].split("### Params")[0]
    assert "| Path" in metrics and "| base" in metrics and "| change" in metrics
    assert "metrics/defects.json" in metrics and "map_50" in metrics
    rerun = next(line for line in text.splitlines() if line.startswith("**Stages re-run:**"))
    assert "`defects_train`" in rerun and "`defects_evaluate`" in rerun
    assert "speech" not in rerun and "check_config" not in rerun
    # The change's side took the speech results of the base side from the shared run cache.
    assert "Stage 'speech_train' is cached" in out.stderr
    assert "Running stage 'speech_train'" not in out.stderr
    assert git_state(tiny_repo) == before


@pytest.mark.slow
def test_model_diff_runs_the_changes_own_code_and_fails_with_its_error(
    tiny_repo: Path, tmp_path: Path
):
    # An uncommitted edit of a stage script: the change's side must run it, not the editable
    # install of this checkout, and its failure must fail the diff with the stage's error.
    stage = tiny_repo / "src/liveml/stages/evaluate.py"
    stage.write_text(
        stage.read_text().replace(
            "    project, cfg = stage_config()",
            "    raise SystemExit('evaluate broken on purpose')",
        )
    )
    before = git_state(tiny_repo)
    summary = tmp_path / "summary.md"
    out = model_diff(tiny_repo, "HEAD", "--cache", str(tiny_repo / ".dvc/cache"), summary=summary)
    assert out.returncode == 1
    assert "evaluate broken on purpose" in out.stderr
    assert "`dvc repro` failed on the change side" in out.stderr
    text = summary.read_text()
    assert "uncommitted changes" in text
    assert "**Failed:**" in text and "evaluate broken on purpose" in text
    assert "### Metrics" not in text
    assert git_state(tiny_repo) == before


def project_repo(root: Path) -> Path:
    """A git repo of this project's files as they are (full-size recipe, no outputs), `main`."""
    files = run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    run(["git", "init", "-q", "-b", "main"], root)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    return root


@pytest.mark.slow
def test_model_diff_of_a_pull_request_from_scratch(tmp_path: Path):
    """As in CI: a base with the full recipe and no DVC cache, so both sides run the tiny
    pipeline (about two minutes on 2 cores)."""
    repo = project_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "lr")
    set_values(repo / "conf", "model/fcos_tiny.yaml", {"lr": 0.0123})
    # A change the tiny recipe hides: the summary must say so.
    set_values(repo / "conf", "trainer/defects.yaml", {"max_epochs": 31})
    git(repo, "commit", "-qam", "defects lr 0.0123")
    summary = tmp_path / "summary.md"

    out = model_diff(repo, "main", summary=summary)
    assert out.returncode == 0, out.stderr[-4000:]

    text = summary.read_text()
    assert "`trainer/defects.yaml: max_epochs`" in text.split("**Stages re-run:**")[0]
    params = text.split("### Params")[1]
    assert any(
        "tasks.defects.model.lr" in line and "0.0123" in line for line in params.splitlines()
    )
    assert "max_epochs" not in params
    assert "map_50" in text.split("### Metrics")[1]
    assert "Stage 'speech_train' is cached" in out.stderr
