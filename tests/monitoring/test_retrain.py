"""The closed loop, end to end on a tiny pipeline: serve -> drifted traffic -> monitor flags
drift -> labelled feedback version -> DVC experiment -> challenger promoted -> the running
server hot-reloads the new champion. Plus the promotion rule on its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from liveml.monitoring.retrain import decide

from tinyrepo import git, run, set_values

BIN = Path(sys.executable).parent


def score(value: float, higher: bool = True, metric: str = "map_50") -> dict:
    return {"metric": metric, "value": value, "higher_is_better": higher}


def test_promotes_only_when_better_on_drift_and_within_margin() -> None:
    champ = {"original": score(0.80), "drifted": score(0.30)}
    ok, why = decide(champ, {"original": score(0.79), "drifted": score(0.60)}, margin=0.02)
    assert ok and "better on the drifted data" in why
    ok, why = decide(champ, {"original": score(0.70), "drifted": score(0.60)}, margin=0.02)
    assert not ok and "margin" in why
    ok, why = decide(champ, {"original": score(0.90), "drifted": score(0.30)}, margin=0.02)
    assert not ok and "not better" in why
    # Lower is better for CER: 0.20 -> 0.10 on the drift is a gain, 0.05 -> 0.06 a small loss.
    cer = {"original": score(0.05, False, "cer"), "drifted": score(0.20, False, "cer")}
    ok, _ = decide(
        cer, {"original": score(0.06, False, "cer"), "drifted": score(0.10, False, "cer")}, 0.02
    )
    assert ok
    ok, why = decide(champ, {"original": score(0.8), "drifted": score(None)}, margin=0.02)
    assert not ok and "nothing to compare" in why


# A defects model that learns something in seconds: the loop must have a real champion to beat.
# Values set where the project sets them (tinyrepo.TINY): the trainer and monitor groups ship
# with liveml, the project overrides them per task.
LEARNABLE_MONITOR = {"reference_size": 120, "permutations": 199}
LEARNABLE = {
    "data/defects.yaml": {"image_size": 64, "n_train": 160, "n_val": 8, "n_test": 48},
    "trainer/defects.yaml": {"max_epochs": 6},
    "config.yaml": {"monitor": LEARNABLE_MONITOR},
    "pipeline.yaml": {"tasks": {"defects": {"monitor": LEARNABLE_MONITOR}}},
}
WINDOW, K = 24, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_weights(url: str) -> str:
    card = requests.get(f"{url}/v1/models", timeout=10).json()["models"][0]["card"]
    return card["lineage"]["weights_sha256"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_drift_loop_end_to_end(tiny_pipeline: Path, tmp_path: Path, monkeypatch) -> None:
    from liveml.core.config import compose
    from liveml.core.project import Project
    from liveml.tasks import get_task

    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, repo, symlinks=True)
    for rel, values in LEARNABLE.items():
        set_values(repo / "conf", rel, values)
    run(["liveml", "params"], repo)
    run(["dvc", "repro", "defects_export", "defects_reference"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "learnable defects model")
    champion = json.loads((repo / "data/defects/model/run.json").read_text())

    # The traffic: photos 70% darker, drawn by the generator, so their labels are known.
    cfg = compose(["task=defects"], project=Project(repo))
    cfg.data = get_task("defects").drifted_recipe(cfg.data, "darker", 0.7)
    cfg.data.seed, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test = 7, 3 * WINDOW, 2, 2
    labels = tmp_path / "dark"
    get_task("defects").generate(cfg, labels)
    photos = sorted((labels / "images/train").glob("*.png"))

    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [BIN / "liveml", "serve", "--model", f"defects={repo / 'data/defects/export'}",
         "--port", str(port), "--capture-dir", str(repo / "captures"),
         "--capture-sample", "1", "--reload-every", "0.5"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 120, "the server to get ready")
        assert served_weights(url) == champion["weights_sha256"]
        for photo in photos:
            r = requests.post(
                f"{url}/v1/defects", data=photo.read_bytes(), headers={"Content-Type": "image/png"}
            )
            assert r.status_code == 200, r.text
        wait_for(lambda: len(list((repo / "captures/defects").rglob("*.json"))) == len(photos),
                 30, "the captures")  # fmt: skip

        out = run(
            ["liveml", "monitor", "defects", "--window", str(WINDOW), "--consecutive", str(K),
             "--retrain", "--labels", str(labels), "--out", str(tmp_path / "report")],
            repo, check=False,
        )  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr  # drift
        summary = json.loads((tmp_path / "report/summary.json").read_text())
        assert summary["persistent"] and len(summary["windows"]) == 3
        assert all("brightness" in w["drifted"] for w in summary["windows"])
        outcome = summary["retrain"]
        assert outcome["decision"] == "promoted", outcome["reason"]
        assert (tmp_path / "report/report.html").is_file()

        # The new champion is what the pipeline's folders now hold, committed.
        promoted = json.loads((repo / "data/defects/model/run.json").read_text())
        assert promoted["weights_sha256"] == outcome["challenger"]["weights_sha256"]
        assert promoted["weights_sha256"] != champion["weights_sha256"]
        assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
        log = run(["git", "log", "--format=%s", "-3"], repo).stdout.splitlines()
        assert log[0].startswith(f"promote {outcome['experiment']}")
        assert log[1].startswith(f"feedback defects/{outcome['feedback_version']}")

        # ... and the running server swapped it in without a restart.
        wait_for(lambda: served_weights(url) == promoted["weights_sha256"], 60, "the hot reload")
        assert (
            'liveml_model_reloads_total{model="defects",outcome="ok"} 1.0'
            in requests.get(f"{url}/metrics", timeout=10).text
        )
        photo = photos[0].read_bytes()
        r = requests.post(f"{url}/v1/defects", data=photo, headers={"Content-Type": "image/png"})
        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(30)

    # Lineage: model -> data version -> feedback version -> the drift report that caused it.
    version = outcome["feedback_version"]
    vdir = repo / "feedback/defects" / version
    provenance = json.loads((vdir / "provenance.json").read_text())
    assert provenance["drift_report"]["summary"] == str(tmp_path / "report/summary.json")
    assert "brightness" in provenance["drift_report"]["drifted"]
    assert len(provenance["captures"]) == 3 * WINDOW  # the whole trailing run of drifted windows
    assert (repo / f"feedback/defects/{version}.dvc").is_file()
    merged = json.loads((repo / "data/defects/raw/feedback.json").read_text())
    assert [m["version"] for m in merged] == [version]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    raw_hash = next(o["md5"] for o in lock["stages"]["defects_generate"]["outs"])
    assert promoted["data"]["data/defects/raw"] == raw_hash
    record = json.loads((repo / "runs" / outcome["run_id"] / "run.json").read_text())
    assert record["kind"] == "retrain"
    assert record["retrain"]["challenger"]["run_id"] == promoted["run_id"]
    shown = run(["liveml", "lineage", promoted["run_id"]], repo).stdout
    assert version in shown and "brightness" in shown

    # A second pass over the same captures does not retrain again (in this process: the
    # first pass above ran the real command).
    from liveml.cli import main

    monkeypatch.chdir(repo)
    args = ["monitor", "defects", "--window", str(WINDOW), "--consecutive", str(K), "--retrain"]
    assert main([*args, "--labels", str(labels), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again/summary.json").read_text())["windows"] == []


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_retrain_needs_labels(tiny_pipeline: Path) -> None:
    """--retrain without --labels is refused before anything runs."""
    out = run(["liveml", "monitor", "defects", "--retrain"], tiny_pipeline, check=False)
    assert out.returncode == 2
    assert "--labels" in out.stderr
