"""The third task, end to end, as a user runs it: a project made by `liveml init`, its task
replaced by `examples/textintent` (short texts: a kind of data neither built-in task has), with
liveml installed from its wheel into the project's own environment. The framework is not edited:
everything below goes through the entry point and the task contract.

One test on purpose: each step needs the previous one's outputs (the pipeline's model, its run
records, its reference), and making the project costs most of the time.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests
import yaml

from liveml.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "textintent"
TASK = "textintent"
STAGES = ("generate", "validate", "train", "evaluate", "export", "reference")


def make_project(root: Path) -> Path:
    """`liveml init` with a task named textintent, then the example's package, conf and tests in
    place of the generated skeleton's (the example is a package of its own named textintent)."""
    assert main(["init", str(root), "--task", TASK, "--package", TASK]) == 0
    shutil.rmtree(root / "src" / TASK)
    shutil.copytree(
        EXAMPLE / "src" / TASK,
        root / "src" / TASK,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for group in ("task", "model", "data", "trainer"):
        shutil.copy2(EXAMPLE / "conf" / group / f"{TASK}.yaml", root / "conf" / group)
    for test in root.joinpath("tests").glob("test_*.py"):
        test.unlink()
    for test in EXAMPLE.joinpath("tests").glob("*.py"):
        shutil.copy2(test, root / "tests")
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    generated = next(line for line in text.splitlines() if line.startswith(f"{TASK} = "))
    pyproject.write_text(text.replace(generated, f'{TASK} = "{TASK}.task:TextIntentTask"'))
    return root


def run(cmd: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, (
        f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_one_request(bin_dir: Path, root: Path, env: dict, text: bytes) -> dict:
    """`liveml serve` in the project; the answer of `/v1/textintent` to `text`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [bin_dir / "liveml", "serve", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "liveml serve did not get ready in 120 s"
            time.sleep(0.3)
        models = requests.get(f"{url}/v1/models", timeout=10).json()
        assert TASK in json.dumps(models)
        answer = requests.post(
            f"{url}/v1/{TASK}", data=text, headers={"Content-Type": "text/plain"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        return answer.json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_third_task_in_its_own_project_runs_everything_liveml_does(
    tmp_path, layered_venv, run_make, project_env
):
    root = make_project(tmp_path / "support")
    python = layered_venv(root)
    bin_dir = python.parent
    env = {**project_env, "PATH": f"{bin_dir}:{project_env['PATH']}"}

    # The project's own tests (the example's unit tests), then its pipeline: `make repro`.
    done = run_make(root, "test")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    done = run_make(root, "repro")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert {f"{TASK}_{s}" for s in STAGES} <= set(stages)
    metrics = json.loads((root / "metrics" / f"{TASK}.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics
    status = run([python, "-m", "dvc", "status"], root, env).stdout
    assert f"{TASK}_" not in status, status  # only check_config, which always runs

    # A Hydra multirun sweep of 2 jobs, each a run record in the store.
    run(
        [python, "-m", "liveml.training", "-m", f"task={TASK}", "model.lr=0.02,0.1"],
        root,
        env,
    )
    table = json.loads(run([bin_dir / "liveml", "compare", "--json"], root, env).stdout)
    rows = table["rows"] if isinstance(table, dict) else table
    assert len(rows) >= 3, table  # the pipeline's run + the sweep's two jobs
    swept = json.loads(
        run([bin_dir / "liveml", "compare", "--sweep", "last", "--json"], root, env).stdout
    )
    swept_rows = swept["rows"] if isinstance(swept, dict) else swept
    assert len(swept_rows) == 2

    # The pipeline's model, retrained from its record: bit-identical weights.
    model_run = json.loads((root / "data" / TASK / "model" / "run.json").read_text())
    done = run([bin_dir / "liveml", "reproduce", model_run["run_id"], "--json"], root, env)
    report = json.loads(done.stdout)
    assert report["weights_match"] and report["metrics_match"], report

    # Served: its endpoint answers a request, the page lists it.
    answer = serve_one_request(
        bin_dir, root, env, b"I was charged twice for my order, please refund the payment"
    )
    [result] = answer["results"]
    assert result["intent"] in {"billing", "delivery", "returns", "account", "technical"}, answer

    # Monitored: a folder of its own test inputs is compared with the reference, no drift.
    inputs = root / "data" / TASK / "raw"
    out = tmp_path / "report"
    done = subprocess.run(
        [bin_dir / "liveml", "monitor", TASK, "--inputs", inputs, "--window", "50", "--out", out],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == TASK and summary["windows"], summary
