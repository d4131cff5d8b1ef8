"""The defects LightningModule: steps, logged metrics, hparams, and exact resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from liveml.core.config import to_dict
from liveml.tasks.defects.datamodule import DefectsDataModule
from liveml.tasks.defects.module import DefectsModule

from taskconfig import check

CLASSES = ["scratch", "crack", "spot"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfg(max_epochs: int = 2):
    return check(
        {
            "seed": 0,
            "task": {"name": "defects", "classes": CLASSES},
            "data": {"image_size": 64},
            "model": {
                "channels": [8, 16, 16, 32],
                "fpn_channels": 32,
                "head_convs": 1,
                "batch_size": 8,
            },
            "trainer": {"max_epochs": max_epochs},
        }
    )


def trainer(**kwargs) -> L.Trainer:
    defaults = {
        "accelerator": "cpu",
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**defaults, **kwargs})


def test_fast_dev_run_logs_losses_and_val_map(tiny_defects_data):
    cfg = tiny_cfg()
    module = DefectsModule(cfg)
    t = trainer(fast_dev_run=True)
    t.fit(module, DefectsDataModule(cfg, tiny_defects_data))
    logged = t.callback_metrics
    for key in ("train/loss", "train/loss_classification", "train/loss_bbox_regression"):
        assert torch.isfinite(logged[key])
    assert 0.0 <= float(logged["val/map_50"]) <= 1.0
    assert "val/map" in logged


def test_hparams_hold_the_plain_config_and_checkpoints_reload(tiny_defects_data, tmp_path):
    cfg = tiny_cfg()
    module = DefectsModule(cfg)
    assert module.hparams["cfg"] == to_dict(cfg)
    assert isinstance(module.hparams["cfg"], dict)
    t = trainer(max_steps=1, limit_val_batches=0)
    t.fit(module, DefectsDataModule(cfg, tiny_defects_data))
    t.save_checkpoint(tmp_path / "m.ckpt")
    reloaded = DefectsModule.load_from_checkpoint(tmp_path / "m.ckpt")
    for (k, a), b in zip(module.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_initial_weights_depend_on_the_seed_only():
    torch.manual_seed(123)
    a = DefectsModule(tiny_cfg()).state_dict()
    torch.manual_seed(456)
    b = DefectsModule(tiny_cfg()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_forward_returns_detections_in_eval_mode():
    module = DefectsModule(tiny_cfg()).eval()
    with torch.no_grad():
        out = module(torch.rand(2, 3, 64, 64))
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}


class _SeenEpochs(L.Callback):
    def __init__(self):
        self.sampler_epochs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.sampler_epochs.append(trainer.train_dataloader.sampler.epoch)


@pytest.mark.timeout(120)
def test_resume_from_epoch_checkpoint_gives_identical_weights(tiny_defects_data, tmp_path):
    """Lightning sets the sampler's epoch, so a run resumed from its epoch-0 checkpoint ends
    with the same weights as the uninterrupted run, bit for bit."""
    cfg = tiny_cfg(max_epochs=2)
    limits = {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1}

    seen = _SeenEpochs()
    every_epoch = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    full = DefectsModule(cfg)
    trainer(callbacks=[seen, every_epoch], enable_checkpointing=True, **limits).fit(
        full, DefectsDataModule(cfg, tiny_defects_data)
    )
    assert seen.sampler_epochs == [0, 1]

    torch.rand(1000)  # a resumed process starts with other global RNG state
    seen = _SeenEpochs()
    resumed = DefectsModule(cfg)
    trainer(callbacks=[seen], **limits).fit(
        resumed, DefectsDataModule(cfg, tiny_defects_data), ckpt_path=tmp_path / "epoch=0.ckpt"
    )
    assert seen.sampler_epochs == [1]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
