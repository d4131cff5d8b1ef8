"""The speech data: loading, padding/collation, bucketing, and (seed, epoch, index) determinism."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from liveml.tasks.speech.datamodule import (
    BucketBatchSampler,
    SpeechClips,
    SpeechDataModule,
    add_echo,
    collate,
    load,
)
from liveml.tasks.speech.text import encode

from taskconfig import check


def tiny_cfg(recipe, batch_size: int = 4, **model):
    return check(
        {
            "seed": 0,
            "task": {"name": "speech"},
            "data": OmegaConf.to_container(recipe()),
            "model": {"batch_size": batch_size, **model},
        }
    )


def test_load_reads_every_clip_of_the_manifest(tiny_speech_data):
    waves, rows = load(tiny_speech_data, "val")
    lines = (tiny_speech_data / "manifests" / "val.jsonl").read_text().splitlines()
    assert rows == [json.loads(line) for line in lines]
    assert all(w.dtype == torch.int16 and w.ndim == 1 for w in waves)
    samples, rate = sf.read(tiny_speech_data / rows[0]["file"], dtype="int16")
    assert rate == 16_000 and torch.equal(waves[0], torch.from_numpy(samples))
    for w, r in zip(waves, rows, strict=True):
        assert len(w) / 16_000 == pytest.approx(r["duration_s"], abs=1e-3)


def test_unknown_split_is_an_error(tiny_speech_data):
    with pytest.raises(ValueError, match="unknown split"):
        load(tiny_speech_data, "dev")


def test_items_are_float_waveforms_and_character_ids(tiny_speech_data):
    ds = SpeechClips(tiny_speech_data, "val")
    wave, target = ds[0]
    assert wave.dtype == torch.float32 and wave.abs().max() <= 1.0
    assert torch.equal(wave, ds.waves[0].float() / 32768.0)
    assert target.tolist() == encode(ds.rows[0]["text"])


def test_collate_pads_and_concatenates():
    samples = [
        (torch.ones(5), torch.tensor([3, 4])),
        (torch.ones(3), torch.tensor([5, 6, 7])),
    ]
    waves, wave_lengths, targets, target_lengths = collate(samples)
    assert waves.shape == (2, 5) and waves[1, 3:].abs().sum() == 0
    assert wave_lengths.tolist() == [5, 3]
    assert targets.tolist() == [3, 4, 5, 6, 7] and target_lengths.tolist() == [2, 3]


def test_echo_adds_decaying_delayed_copies():
    wave = torch.zeros(100)
    wave[0] = 1.0
    out = add_echo(wave, delay=30, gain=0.5)
    assert out.nonzero().flatten().tolist() == [0, 30, 60, 90]
    torch.testing.assert_close(out[[0, 30, 60, 90]], torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert wave.sum() == 1.0  # the input is left alone


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_speech_data):
    def clips(seed):
        return SpeechClips(
            tiny_speech_data,
            "train",
            augment=True,
            speed=(0.9, 1.1),
            gain_db=6.0,
            echo_prob=0.5,
            seed=seed,
        )

    ds = clips(0)
    a, _ = ds[(2, 5)]
    torch.rand(100)  # global RNG moves on...
    state = torch.get_rng_state()
    b, _ = ds[(2, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # ...and the dataset leaves it alone
    assert torch.equal(a, b)
    other_seed = clips(1)
    for index in range(3):
        assert not torch.equal(ds[(0, index)][0], ds[(1, index)][0])
        assert not torch.equal(ds[(0, index)][0], other_seed[(0, index)][0])
    # Speed perturbation changes the length by at most 10%, never the transcript.
    n = len(ds.waves[5])
    assert 0.9 * n - 1 <= len(a) <= n / 0.9 + 1
    assert torch.equal(ds[(2, 5)][1], ds[5][1])


def test_bucket_batches_cover_every_clip_once_and_follow_the_epoch():
    lengths = [int(x) for x in torch.randint(1_000, 40_000, (103,))]
    s = BucketBatchSampler(lengths, 8, seed=0, pool=4)
    e3 = s.batches(3)
    assert sorted(i for b in e3 for i in b) == list(range(103))
    assert len(e3) == len(s) == 13
    assert s.batches(3) == e3 and s.batches(4) != e3
    assert BucketBatchSampler(lengths, 8, seed=1, pool=4).batches(3) != e3
    # Each pool of 4 batches is sorted by length: a batch spans a quarter of a pool's range.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in e3) / len(e3)
    assert spread < 0.5 * (max(lengths) - min(lengths))
    dropping = BucketBatchSampler(lengths, 8, seed=0, pool=4, drop_last=True)
    assert all(len(b) == 8 for b in dropping.batches(0)) and len(dropping) == 12
    s.sampler.set_epoch(3)
    assert [[i for _, i in b] for b in s] == e3
    assert {e for b in s for e, _ in b} == {3}


def test_train_batches_are_reproducible_per_seed_and_epoch(tiny_speech_recipe, tiny_speech_data):
    def epoch_batches(epoch):
        loader = SpeechDataModule(tiny_cfg(tiny_speech_recipe), tiny_speech_data).train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        return list(loader)

    a, b, c = epoch_batches(1), epoch_batches(1), epoch_batches(2)
    assert len(a) == 24 // 4
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, c, strict=True))
    waves, wave_lengths, targets, target_lengths = a[0]
    assert waves.shape == (4, int(wave_lengths.max())) and waves.dtype == torch.float32
    assert int(target_lengths.sum()) == len(targets)


def test_evaluation_loaders_give_every_clip_once_unaugmented(tiny_speech_recipe, tiny_speech_data):
    dm = SpeechDataModule(tiny_cfg(tiny_speech_recipe, batch_size=3), tiny_speech_data)
    seen = []
    for waves, wave_lengths, _, _ in dm.val_dataloader():
        seen += [w[:n] for w, n in zip(waves, wave_lengths, strict=True)]
    stored = [w.float() / 32768.0 for w in dm.dataset("val").waves]
    assert len(seen) == len(stored) == 8
    for w in seen:  # bucketing reorders the clips; each still arrives exactly as stored
        assert sum(torch.equal(w, s) for s in stored) == 1
