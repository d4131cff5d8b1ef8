"""The speech LightningModule: logged metrics, hparams, overfitting, deployable, exact resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torchmetrics.text import CharErrorRate

from liveml.core.config import to_dict
from liveml.tasks.speech.datamodule import SpeechDataModule
from liveml.tasks.speech.evaluation import load_split
from liveml.tasks.speech.module import SpeechModule, decode, target_texts
from liveml.training.optim import adamw_one_cycle

from taskconfig import check

TINY_MODEL = {"n_mels": 32, "channels": [8, 8], "rnn_hidden": 32, "rnn_layers": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfg(recipe, max_epochs: int = 2, **model):
    return check(
        {
            "seed": 0,
            "task": {"name": "speech"},
            "data": OmegaConf.to_container(recipe()),
            "model": {**TINY_MODEL, "batch_size": 8, **model},
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


def test_fast_dev_run_logs_loss_cer_and_wer(tiny_speech_recipe, tiny_speech_data):
    cfg = tiny_cfg(tiny_speech_recipe)
    t = trainer(fast_dev_run=True)
    t.fit(SpeechModule(cfg), SpeechDataModule(cfg, tiny_speech_data))
    logged = t.callback_metrics
    assert torch.isfinite(logged["train/loss"])
    assert float(logged["val/cer"]) >= 0.0 and float(logged["val/wer"]) >= 0.0


def test_hparams_hold_the_plain_config_and_checkpoints_reload(
    tiny_speech_recipe, tiny_speech_data, tmp_path
):
    cfg = tiny_cfg(tiny_speech_recipe)
    module = SpeechModule(cfg)
    assert module.hparams["cfg"] == to_dict(cfg)
    assert isinstance(module.hparams["cfg"], dict)
    t = trainer(max_steps=1, limit_val_batches=0)
    t.fit(module, SpeechDataModule(cfg, tiny_speech_data))
    t.save_checkpoint(tmp_path / "m.ckpt")
    reloaded = SpeechModule.load_from_checkpoint(tmp_path / "m.ckpt")
    for (k, a), b in zip(module.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_initial_weights_depend_on_the_seed_only(tiny_speech_recipe):
    torch.manual_seed(123)
    a = SpeechModule(tiny_cfg(tiny_speech_recipe)).state_dict()
    torch.manual_seed(456)
    b = SpeechModule(tiny_cfg(tiny_speech_recipe)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_tiny_model_overfits_four_clips(tiny_speech_recipe, tiny_speech_data):
    """CTC training works end to end: 4 clips are learnt to a low CER within seconds."""
    cfg = tiny_cfg(
        tiny_speech_recipe,
        rnn_hidden=64,
        dropout=0.0,
        freq_masks=0,
        time_masks=0,
        lr=0.01,
        warmup_frac=0.05,
        speed_perturb=[1.0, 1.0],
        gain_db=0.0,
    )
    waves, rows = load_split(tiny_speech_data, "train")
    waves, refs = waves[:4], [r["text"] for r in rows[:4]]
    batch = (
        torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
        torch.tensor([len(w) for w in waves]),
        *_targets(refs),
    )
    module = SpeechModule(cfg)
    module.log = lambda *args, **kwargs: None  # no trainer attached
    steps = 300
    m = cfg.model
    opt = adamw_one_cycle(
        module.parameters(),
        lr=m.lr,
        weight_decay=m.weight_decay,
        warmup_frac=m.warmup_frac,
        total_steps=steps,
    )
    for step in range(steps):
        loss = module.training_step(batch, step)
        opt["optimizer"].zero_grad()
        loss.backward()
        opt["optimizer"].step()
        opt["lr_scheduler"]["scheduler"].step()
    hyps = module.transcribe(waves)
    assert float(CharErrorRate()(hyps, refs)) < 0.1, list(zip(refs, hyps, strict=True))


def test_target_texts_keep_double_letters():
    targets, lengths = _targets(["open the door", "three"])
    assert target_texts(targets, lengths) == ["open the door", "three"]


def _targets(refs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from liveml.tasks.speech.text import encode

    ids = [torch.tensor(encode(r)) for r in refs]
    return torch.cat(ids), torch.tensor([len(i) for i in ids])


def test_deployable_matches_the_module_and_transcribe(tiny_speech_recipe, tiny_speech_data):
    module = SpeechModule(tiny_cfg(tiny_speech_recipe)).eval()
    deployable = module.deployable()
    assert not deployable.training
    waves, _ = load_split(tiny_speech_data, "test")
    for w in waves[:2]:
        with torch.no_grad():
            want = module(w[None], torch.tensor([len(w)]))
            got = deployable(w[None])
        torch.testing.assert_close(got[0], want[0])
        assert torch.equal(got[1], want[1])
    with torch.no_grad():
        one_by_one = [decode(*deployable(w[None]))[0] for w in waves]
    assert module.transcribe(waves, batch_size=1) == one_by_one


class _SeenEpochs(L.Callback):
    def __init__(self):
        self.sampler_epochs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.sampler_epochs.append(trainer.train_dataloader.batch_sampler.sampler.epoch)


@pytest.mark.timeout(120)
def test_resume_from_epoch_checkpoint_gives_identical_weights(
    tiny_speech_recipe, tiny_speech_data, tmp_path
):
    """Lightning sets the sampler's epoch and SpecAugment/dropout are seeded per step, so a
    run resumed from its epoch-0 checkpoint ends with the same weights, bit for bit."""
    cfg = tiny_cfg(tiny_speech_recipe, max_epochs=2)
    limits = {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1}

    seen = _SeenEpochs()
    every_epoch = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    full = SpeechModule(cfg)
    trainer(callbacks=[seen, every_epoch], enable_checkpointing=True, **limits).fit(
        full, SpeechDataModule(cfg, tiny_speech_data)
    )
    assert seen.sampler_epochs == [0, 1]

    torch.rand(1000)  # a resumed process starts with other global RNG state
    seen = _SeenEpochs()
    resumed = SpeechModule(cfg)
    trainer(callbacks=[seen], **limits).fit(
        resumed, SpeechDataModule(cfg, tiny_speech_data), ckpt_path=tmp_path / "epoch=0.ckpt"
    )
    assert seen.sampler_epochs == [1]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
