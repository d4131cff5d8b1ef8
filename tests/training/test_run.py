"""train(cfg): deterministic weights, exact resume after SIGKILL, atomic model folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from liveml.tracking.lineage import weights_sha256
from liveml.tracking.runs import RunStore
from liveml.training.run import _resume_point, load_trained, save_checkpoint, train


def test_two_runs_give_identical_weights(tiny_trainable, tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    a = train(cfg, out_dir=tmp_path / "a", project=tiny_trainable)
    b = train(cfg, out_dir=tmp_path / "b", project=tiny_trainable)

    assert a["fingerprint"] == b["fingerprint"] and a["run_id"] != b["run_id"]
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["metrics"] == b["metrics"]
    assert {"train/loss", "val/map_50", "val/map"} <= set(a["metrics"])
    assert a["resumed_from"] is None and a["epochs"] == 2
    assert a["wandb"]["mode"] == "offline" and a["wandb"]["id"] != b["wandb"]["id"]

    model = tmp_path / "a"
    assert sorted(p.name for p in model.iterdir()) == [
        "config.yaml",
        "metrics.csv",
        "run.json",
        "weights.pt",
    ]
    state = torch.load(model / "weights.pt", weights_only=True)
    assert weights_sha256(state) == a["weights_sha256"]
    assert yaml.safe_load((model / "config.yaml").read_text()) == a["config"]
    module, record = load_trained(model)
    assert record["run_id"] == a["run_id"] and not module.training
    assert weights_sha256(module.state_dict()) == a["weights_sha256"]

    store = RunStore.for_project(tiny_trainable, cfg)
    assert [r["weights_sha256"] for r in store.list()] == [a["weights_sha256"]] * 2
    assert (store.path / a["run_id"] / "metrics.csv").read_text() == (
        model / "metrics.csv"
    ).read_text()
    # A finished run leaves no checkpoints behind to "resume".
    assert not list(tiny_trainable.path(cfg.paths.checkpoints).iterdir())


def test_speech_runs_are_deterministic_too(tiny_speech_trainable, tiny_speech_cfg, tmp_path):
    """The determinism guarantee is the framework's, not one task's: same config, same bytes."""
    cfg = tiny_speech_cfg()
    a = train(cfg, out_dir=tmp_path / "a", project=tiny_speech_trainable)
    b = train(cfg, out_dir=tmp_path / "b", project=tiny_speech_trainable)
    assert a["task"] == "speech" and a["fingerprint"] == b["fingerprint"]
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["metrics"] == b["metrics"]
    assert {"train/loss", "val/cer", "val/wer"} <= set(a["metrics"])
    c = train(tiny_speech_cfg("seed=1"), out_dir=tmp_path / "c", project=tiny_speech_trainable)
    assert c["weights_sha256"] != a["weights_sha256"]
    module, _ = load_trained(tmp_path / "a")
    assert weights_sha256(module.state_dict()) == a["weights_sha256"]


def test_load_trained_rejects_modified_weights(tiny_trainable, tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.max_epochs=1"), out_dir=tmp_path / "m", project=tiny_trainable)
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, tmp_path / "m" / "weights.pt")
    with pytest.raises(ValueError, match="does not match the weights_sha256"):
        load_trained(tmp_path / "m")


def test_a_model_trained_before_a_setting_existed_still_loads(tiny_trainable, tiny_cfg, tmp_path):
    # Models of the committed pipeline predate monitor.keep_reports/keep_days: monitoring them
    # must not fail on settings that do not touch the weights.
    import json

    record = train(tiny_cfg("trainer.max_epochs=1"), out_dir=tmp_path / "m", project=tiny_trainable)
    path = tmp_path / "m" / "run.json"
    old = json.loads(path.read_text())
    for key in ("keep_reports", "keep_days"):
        del old["config"]["monitor"][key]
    path.write_text(json.dumps(old))
    _, loaded = load_trained(tmp_path / "m")
    assert loaded["weights_sha256"] == record["weights_sha256"]
    # A missing key that decides the weights is still an error, naming it.
    del old["config"]["model"]["lr"]
    path.write_text(json.dumps(old))
    with pytest.raises(Exception, match=r"model\.lr"):
        load_trained(tmp_path / "m")


def test_kill_then_resume_matches_an_uninterrupted_run(
    tiny_trainable, tiny_cfg, tiny_overrides, tmp_path
):
    root = tiny_trainable.root
    # 4 epochs: after the first checkpoint, 3 more leave ample time to kill it mid-run.
    args = [sys.executable, "-m", "liveml.training", *tiny_overrides, "trainer.max_epochs=4"]
    # Separate processes, as in real use: not attached to this process's W&B service.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(LIVEML_ROOT=str(root), WANDB_MODE="offline")
    ckpts = tiny_trainable.path(tiny_cfg().paths.checkpoints)

    killed = subprocess.Popen(
        args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not list(ckpts.glob("*/last.ckpt")):
            assert killed.poll() is None, "training ended before any checkpoint"
            assert time.monotonic() < deadline, "no epoch checkpoint within 300 s"
            time.sleep(0.005)
        assert killed.poll() is None, "training finished before it could be killed"
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert not list(root.glob("outputs/*/*/model"))  # a killed run writes no model folder

    resumed = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "liveml: resuming run" in resumed.stderr
    (record,) = RunStore.for_project(tiny_trainable).list()
    done = record["resumed_from"]["epochs_done"]
    assert 1 <= done < 4, record["resumed_from"]  # it resumed, and still had epochs to train
    assert record["epochs"] == 4

    reference = train(
        tiny_cfg("trainer.max_epochs=4"), out_dir=tmp_path / "ref", project=tiny_trainable
    )
    assert reference["resumed_from"] is None
    assert reference["fingerprint"] == record["fingerprint"]
    assert reference["weights_sha256"] == record["weights_sha256"]
    assert reference["metrics"] == record["metrics"]
    # The resumed metric log is the uninterrupted one: rows up to the checkpoint, then the rest.
    (model,) = root.glob("outputs/*/*/model")
    assert (model / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()


def test_failed_fit_writes_no_model_and_keeps_checkpoints(
    tiny_trainable, tiny_cfg, tmp_path, monkeypatch
):
    from liveml.tasks.defects.module import DefectsModule

    def explode(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("boom in epoch 1")
        return original(self, batch, batch_idx)

    original = DefectsModule.training_step
    monkeypatch.setattr(DefectsModule, "training_step", explode)
    cfg = tiny_cfg()
    with pytest.raises(RuntimeError, match="boom in epoch 1"):
        train(cfg, out_dir=tmp_path / "m", project=tiny_trainable)
    assert not (tmp_path / "m").exists()
    assert not RunStore.for_project(tiny_trainable, cfg).ids()
    (last,) = tiny_trainable.path(cfg.paths.checkpoints).glob("*/last.ckpt")
    point = _resume_point(last.parent, _fingerprint_of(last))
    assert point is not None and point["epochs_done"] == 1


def _fingerprint_of(ckpt: Path) -> str:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["liveml"]["fingerprint"]


def test_checkpoint_of_another_fingerprint_is_never_resumed(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.json").write_text("{}")
    stamp = {"epoch": 0, "global_step": 2, "liveml": {"fingerprint": "other"}}
    save_checkpoint(stamp, work / "last.ckpt")
    assert _resume_point(work, "mine") is None
    assert _resume_point(work, "other") == {
        "path": str(work / "last.ckpt"),
        "epochs_done": 1,
        "global_step": 2,
    }
