"""Tracking: a real offline W&B run is created and finished (also when fit fails), and the
local metrics.csv holds what was logged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from liveml.tracking.loggers import MetricsCSVLogger, open_tracking, wandb_mode

from tinymodule import Tiny, fit
from wandbfile import exit_codes, wandb_file, wandb_records

RECORD = {"run_id": "20261124-153012-ab12cd34", "task": "defects", "fingerprint": "ab" * 32}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_offline_run_is_created_finished_and_metrics_csv_written(tiny_project, tiny_cfg, tmp_path):
    import wandb

    tr = open_tracking(tiny_cfg(), RECORD, tmp_path / "work", project=tiny_project)
    with tr:
        info = tr.info()
        assert info["mode"] == "offline" and Path(info["dir"]).is_dir()
        fit(Tiny(), tr.loggers)
    assert wandb.run is None

    f = wandb_file(tiny_project.root, info["id"])
    assert Path(info["dir"]) == f.parent
    assert exit_codes(f) == [0]
    run = next(r.run for r in wandb_records(f) if r.WhichOneof("record_type") == "run")
    assert run.display_name == RECORD["run_id"]
    assert {"lineage", "model", "trainer"} <= {item.key for item in run.config.update}

    rows = read_csv(tmp_path / "work" / "metrics.csv")
    train = [r for r in rows if r["train/loss"]]
    assert [int(r["step"]) for r in train] == list(range(8))  # 2 epochs x 4 batches
    assert all(float(r["train/loss"]) >= 0 for r in train)
    assert [r["epoch"] for r in rows if r["val/loss"]] == ["0", "1"]


def test_failing_fit_still_finishes_the_wandb_run(tiny_project, tiny_cfg, tmp_path):
    import wandb

    with (
        pytest.raises(RuntimeError, match="boom"),
        open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project) as tr,
    ):
        run_id = tr.info()["id"]
        fit(Tiny(fail_at_step=2), tr.loggers)
    assert wandb.run is None
    assert exit_codes(wandb_file(tiny_project.root, run_id)) == [1]
    rows = read_csv(tmp_path / "w" / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1"]  # what was logged before the failure


def test_resume_continues_the_same_wandb_run(tiny_project, tiny_cfg, tmp_path):
    with open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project) as first:
        first_id = first.info()["id"]
    with open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project, resume=True) as tr:
        assert tr.info()["id"] == first_id
    with open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project) as fresh:
        assert fresh.info()["id"] != first_id


def test_env_wandb_mode_wins(tiny_project, tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(tiny_cfg("logger.mode=disabled")) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = tiny_cfg("logger.mode=offline")
    assert wandb_mode(cfg) == "disabled"
    with open_tracking(cfg, RECORD, tmp_path / "w", project=tiny_project) as tr:
        assert tr.info() == {"id": None, "mode": "disabled", "dir": None}
        assert tr.loggers == [tr.csv]
    assert not (tiny_project.root / "wandb").exists()


def test_csv_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsCSVLogger(path)
    for step in range(6):
        log.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": step // 2}, step=step)
    log.log_metrics({"val/map": 0.25, "epoch": 0}, step=1)
    assert not path.exists()  # logging calls do not write the file
    log.flush()  # what FlushMetricsCSV does at epoch starts and checkpoints

    resumed = MetricsCSVLogger(path, resume=True)
    assert len(resumed.rows) == 7 and resumed.rows[0] == {"step": 0, "train/loss": 1.0, "epoch": 0}
    resumed.truncate(0)  # a checkpoint taken after epoch 0
    rows = read_csv(path)
    assert [(r["step"], r["epoch"]) for r in rows] == [("0", "0"), ("1", "0"), ("1", "0")]
    assert rows[2]["val/map"] == "0.25"


def test_resume_falls_back_to_a_new_wandb_run_when_the_id_is_held(
    tiny_project, tiny_cfg, tmp_path, capfd, monkeypatch
):
    """A killed trainer attached to a shared W&B service (WANDB_SERVICE) leaves its run id
    "in use" there."""
    import os
    import subprocess
    import sys

    with open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project) as first:
        held = first.info()["id"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time, wandb\n"
            f"wandb.init(id={held!r}, mode='offline', dir={str(tmp_path)!r})\n"
            "print(os.environ['WANDB_SERVICE'], flush=True)\ntime.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        service = holder.stdout.readline().strip()
        assert service  # the holder's W&B service, which the resumed run's W&B will share
        monkeypatch.setenv("WANDB_SERVICE", service)
        cfg = tiny_cfg()
        with open_tracking(cfg, RECORD, tmp_path / "w", project=tiny_project, resume=True) as tr:
            new = tr.info()["id"]
    finally:
        holder.kill()
        holder.wait()
    assert new != held
    assert (tmp_path / "w" / "wandb_id").read_text().strip() == new
    assert f"W&B run {held} is still held open" in capfd.readouterr().err


def test_wandb_runs_beside_the_training_and_keeps_every_call_in_order(tmp_path):
    """Training does not wait for W&B (its own process): calls sent while it starts are applied
    in order, then the summary and the finish; the CSV is written at epoch starts and
    checkpoints only."""
    from liveml.tracking.loggers import BackgroundWandb, FlushMetricsCSV

    init = {"name": "r1", "project": "liveml", "dir": str(tmp_path), "mode": "offline"}
    bg = BackgroundWandb(init, tmp_path / "wandb_id", None, "bgorder1", str(tmp_path))
    bg.log_hyperparams({"lr": 0.1, "fn": len})  # made JSON-safe like Lightning's logger does
    for step in range(5):
        bg.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)  # never waits
    bg.summary({"liveml_run_id": "r1"})
    assert bg.ready()["id"] == "bgorder1" and (tmp_path / "wandb_id").read_text() == "bgorder1\n"
    bg.finish(0)
    bg.join()
    assert bg.error is None and bg.seconds["start"] is not None
    (f,) = (tmp_path / "wandb").glob("offline-run-*-bgorder1/*.wandb")
    records = wandb_records(f)
    steps = [
        int(next(i.value_json for i in r.history.item if "trainer/global_step" in _key(i)))
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert steps == [0, 1, 2, 3, 4]
    assert exit_codes(f) == [0]

    # The CSV: nothing on disk per call; FlushMetricsCSV writes it at its two hooks.
    log = MetricsCSVLogger(tmp_path / "metrics.csv")
    flush = FlushMetricsCSV(log)
    log.log_metrics({"train/loss": 0.5, "epoch": 0}, step=0)
    assert not log.path.exists()
    flush.on_save_checkpoint(None, None, {})
    assert len(read_csv(log.path)) == 1
    log.log_metrics({"train/loss_epoch": 0.4, "epoch": 0}, step=0)
    flush.on_train_epoch_start(None, None)
    assert len(read_csv(log.path)) == 2


def test_wandb_that_fails_to_start_stops_the_training_at_its_next_log(tmp_path):
    from liveml.tracking.loggers import BackgroundWandb

    init = {"dir": str(tmp_path), "mode": "no-such-mode"}  # wandb.init refuses it
    bg = BackgroundWandb(init, tmp_path / "wandb_id", None, "x", str(tmp_path))
    with pytest.raises(RuntimeError, match="W&B could not start"):
        bg.ready()
    with pytest.raises(RuntimeError, match="W&B could not start"):
        bg.log_metrics({"a": 1.0}, step=0)
    bg.join()


@pytest.mark.slow
def test_a_killed_training_leaves_its_wandb_run_finished_as_failed(tiny_project, tmp_path):
    """The W&B process outlives a SIGKILLed training only to finish its run (exit code 1)."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from liveml.tracking.loggers import BackgroundWandb\n"
        f"init = {{'dir': {str(tmp_path)!r}, 'mode': 'offline'}}\n"
        f"bg = BackgroundWandb(init, __import__('pathlib').Path({str(tmp_path)!r}) / 'id', "
        f"None, 'killed01', {str(tmp_path)!r})\n"
        "bg.log_metrics({'train/loss': 1.0}, step=0)\n"
        "bg.ready(); print('ready', flush=True); time.sleep(120)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (f,) = (tmp_path / "wandb").glob("offline-run-*-killed01/*.wandb")
    assert exit_codes(f, wait_s=60) == [1]


def _key(item) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)
