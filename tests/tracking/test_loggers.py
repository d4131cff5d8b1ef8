"""Tracking: a real offline W&B run is created and finished (also when fit fails), and the
local metrics.csv holds what was logged."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from liveml.tracking.loggers import MetricsCSVLogger, open_tracking, wandb_mode

from wandbfile import exit_codes, wandb_file, wandb_records

RECORD = {"run_id": "20261124-153012-ab12cd34", "task": "defects", "fingerprint": "ab" * 32}


class Tiny(L.LightningModule):
    """A linear regression: Lightning's loop and logging in milliseconds."""

    def __init__(self, fail_at_step: int | None = None):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.fail_at_step = fail_at_step

    def training_step(self, batch, i):
        if self.global_step == self.fail_at_step:
            raise RuntimeError("boom")
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def _loader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1)), 4)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()


def fit(module, loggers) -> None:
    L.Trainer(
        max_epochs=2,
        logger=loggers,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module)


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

    resumed = MetricsCSVLogger(path, resume=True)
    assert len(resumed.rows) == 7 and resumed.rows[0] == {"step": 0, "train/loss": 1.0, "epoch": 0}
    resumed.truncate(0)  # a checkpoint taken after epoch 0
    rows = read_csv(path)
    assert [(r["step"], r["epoch"]) for r in rows] == [("0", "0"), ("1", "0"), ("1", "0")]
    assert rows[2]["val/map"] == "0.25"


def test_resume_falls_back_to_a_new_wandb_run_when_the_id_is_held(
    tiny_project, tiny_cfg, tmp_path, capfd
):
    """A killed trainer attached to a shared W&B service leaves its run id "in use" there."""
    import os
    import subprocess
    import sys

    with open_tracking(tiny_cfg(), RECORD, tmp_path / "w", project=tiny_project) as first:
        held = first.info()["id"]  # also starts this process's service (WANDB_SERVICE)
    assert os.environ.get("WANDB_SERVICE")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, wandb\n"
            f"wandb.init(id={held!r}, mode='offline', dir={str(tmp_path)!r})\n"
            "print('ready', flush=True)\ntime.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        cfg = tiny_cfg()
        with open_tracking(cfg, RECORD, tmp_path / "w", project=tiny_project, resume=True) as tr:
            new = tr.info()["id"]
    finally:
        holder.kill()
        holder.wait()
    assert new != held
    assert (tmp_path / "w" / "wandb_id").read_text().strip() == new
    assert f"W&B run {held} is still held open" in capfd.readouterr().err
