"""`liveml monitor` on the tiny pipeline's models: the reference stage's profile, windows of
in-distribution vs drifted inputs, reports, exit status, windows by time, bad references."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from liveml.monitoring.drift import Profile


def write_inputs(folder: Path, task: str, inputs: list[bytes], suffix: str) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, data in enumerate(inputs):
        path = folder / f"in_{i:04d}.{suffix}"
        path.write_bytes(data)
        os.utime(path, (1_800_000_000 + i, 1_800_000_000 + i))  # one input per second, in order
        paths.append(path)
    return paths


def pipeline_cfg(repo: Path, task: str):
    from liveml.core.config import load_params
    from liveml.core.project import Project

    return load_params(task, Project(repo))


def test_reference_stage_profiles_the_trained_model(tiny_pipeline: Path) -> None:
    for task in ("defects", "speech"):
        ref = tiny_pipeline / f"data/{task}/reference"
        meta = json.loads((ref / "reference.json").read_text())
        record = json.loads((tiny_pipeline / f"data/{task}/model/run.json").read_text())
        assert meta["model"]["weights_sha256"] == record["weights_sha256"]
        profile = Profile.load(ref / "profile.npz")
        assert len(profile) == meta["n"] == 60
        assert {"confidence"} <= set(profile.numeric) and "predicted_class" in profile.categorical
        assert profile.embedding is not None and profile.embedding.shape[0] == 60
        assert all(np.isfinite(v).all() for v in profile.numeric.values())


@pytest.fixture(scope="module")
def defects_inputs(tiny_pipeline: Path, tmp_path_factory) -> dict[str, Path]:
    """Folders of 60 in-distribution photos and of 60 photos 50% darker (streams unseen by the
    reference)."""
    from liveml.monitoring.monitor import draw_inputs
    from liveml.tasks import get_task

    cfg = pipeline_cfg(tiny_pipeline, "defects")
    root = tmp_path_factory.mktemp("defects-inputs")
    task = get_task("defects")
    same = draw_inputs(task, cfg, 60, stream=3)
    dark = draw_inputs(task, cfg, 60, stream=4, scenario="darker", strength=0.5)
    write_inputs(root / "same", "defects", same, "png")
    write_inputs(root / "dark", "defects", dark, "png")
    return {"same": root / "same", "dark": root / "dark"}


def test_in_distribution_is_quiet_and_darker_photos_drift(
    tiny_pipeline: Path, defects_inputs, tmp_path: Path, monitor
) -> None:
    quiet = monitor(tiny_pipeline, "defects", "--inputs", str(defects_inputs["same"]),
                    "--window", "30", "--out", str(tmp_path / "same"))  # fmt: skip
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    s = json.loads((tmp_path / "same/summary.json").read_text())
    assert len(s["windows"]) == 2 and not s["drift"]

    drift = monitor(tiny_pipeline, "defects", "--inputs", str(defects_inputs["dark"]),
                    "--window", "30", "--out", str(tmp_path / "dark"))  # fmt: skip
    assert drift.returncode == 1, drift.stdout + drift.stderr
    s = json.loads((tmp_path / "dark/summary.json").read_text())
    assert s["drift"] and s["drifted_windows"] == [0, 1] and s["persistent"] is False
    for w in s["windows"]:
        assert "brightness" in w["drifted"]
        assert w["features"]["brightness"]["shift_sd"] < -1  # darker, by a lot
        assert w["n"] == 30
    window = json.loads((tmp_path / "dark/window_0001.json").read_text())
    assert window == s["windows"][1]
    assert (tmp_path / "dark/report.html").stat().st_size > 100_000
    assert "DRIFT" in drift.stdout and "brightness" in drift.stdout
    # K = 2 consecutive drifted windows: persistent.
    k2 = monitor(tiny_pipeline, "defects", "--inputs", str(defects_inputs["dark"]),
                    "--window", "30", "--consecutive", "2", "--no-html",
                    "--out", str(tmp_path / "k2"))  # fmt: skip
    assert k2.returncode == 1
    assert json.loads((tmp_path / "k2/summary.json").read_text())["persistent"] is True
    assert not (tmp_path / "k2/report.html").exists()


def test_windows_by_capture_time(tiny_pipeline: Path, defects_inputs, tmp_path, monitor) -> None:
    """--every cuts by time: 60 inputs one second apart in 20 s buckets are 3 windows."""
    out = monitor(tiny_pipeline, "defects", "--inputs", str(defects_inputs["same"]),
                  "--every", "20s", "--no-html", "--out", str(tmp_path / "t"))  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    s = json.loads((tmp_path / "t/summary.json").read_text())
    assert [w["n"] for w in s["windows"]] == [20, 20, 20]
    assert s["settings"]["every"] == "20s" and s["settings"]["window"] is None
    start = datetime.fromtimestamp(1_800_000_000, UTC).isoformat()
    assert s["windows"][0]["start"] == start


def test_too_few_inputs_make_no_window(tiny_pipeline: Path, defects_inputs, monitor) -> None:
    out = monitor(tiny_pipeline, "defects", "--inputs", str(defects_inputs["same"]),
                  "--window", "100", "--no-html")  # fmt: skip
    assert out.returncode == 0
    assert "no full window yet (60 inputs" in out.stdout
    # Without --out, reports go to paths.monitoring/<UTC time>/ (git-ignored).
    assert f"reports: {tiny_pipeline / 'monitoring/defects'}/" in out.stdout


def test_a_reference_of_another_model_is_refused(
    tiny_pipeline: Path, defects_inputs, tmp_path, monitor
):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, repo, symlinks=True)
    meta_path = repo / "data/defects/reference/reference.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["weights_sha256"] = "0" * 64
    meta_path.unlink()  # DVC links outputs to its cache: never write through them
    meta_path.write_text(json.dumps(meta))
    out = monitor(repo, "defects", "--inputs", str(defects_inputs["same"]), "--window", "30")
    assert out.returncode == 2
    assert "made for model weights 000000000000" in out.stderr and "dvc repro" in out.stderr
    shutil.rmtree(repo / "data/defects/reference")
    out = monitor(repo, "defects", "--inputs", str(defects_inputs["same"]), "--window", "30")
    assert out.returncode == 2 and "no reference profile" in out.stderr


def test_a_missing_source_is_named(tiny_pipeline: Path, tmp_path: Path, monitor) -> None:
    out = monitor(tiny_pipeline, "defects", "--captures", str(tmp_path / "nope"))
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_noisier_speech_drifts(tiny_pipeline: Path, tmp_path: Path, monitor) -> None:
    from liveml.monitoring.monitor import draw_inputs
    from liveml.tasks import get_task

    cfg = pipeline_cfg(tiny_pipeline, "speech")
    noisy = draw_inputs(get_task("speech"), cfg, 40, stream=3, scenario="noisier", strength=20)
    write_inputs(tmp_path / "noisy", "speech", noisy, "wav")
    out = monitor(tiny_pipeline, "speech", "--inputs", str(tmp_path / "noisy"), "--window", "40",
                  "--no-html", "--out", str(tmp_path / "r"))  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    (window,) = json.loads((tmp_path / "r/summary.json").read_text())["windows"]
    assert "snr_db" in window["drifted"]
    assert window["features"]["snr_db"]["shift_sd"] < 0
