"""Monitoring and feedback parts: input features, the model's view, fresh and drifted draws,
labels of captured messages by their bytes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from textintent.synth import message_rng
from textintent.text import featurize, tokens

from conftest import make_cfg, make_project


def draws(task, cfg, recipe, n=60, stream=100):
    return [
        task.draw_input(task.sample_rng(cfg.data.seed, stream, i), recipe, cfg=cfg, index=i)
        for i in range(n)
    ]


def mean(task, inputs, feature):
    return float(np.mean([task.input_features(x)[feature] for x in inputs]))


def test_featurize_is_stable_across_processes():
    # CRC-32 ids, not Python's salted hash: these numbers hold in every process and release.
    ids = featurize("Order 123 late", n_buckets=8192, max_tokens=12)
    assert tokens("Order 123 late")[:5] == ["w:order", "c:<or", "c:ord", "c:rde", "c:der"]
    assert "w:000" in tokens("Order 123 late")  # digits fold to 0
    assert ids.dtype == np.int64 and ids.shape == (12,) and (ids[:12] > 0).all()
    assert ids.tolist()[:3] == featurize("ORDER 999", 8192, 3).tolist()
    assert featurize("hi", 8192, 6).tolist()[3:] == [0, 0, 0]  # padded


def test_input_features_of_a_message(task):
    f = task.input_features(b"HELLO, order #12345678 is LATE!")
    assert f["chars"] == 31 and f["words"] == 4  # words are letters only
    assert f["digit_share"] == pytest.approx(8 / 31)
    assert f["upper_share"] == pytest.approx(9 / 16)
    assert f["unknown_word_share"] == 0.0
    assert task.input_features(b"helo wrld")["unknown_word_share"] == 1.0
    with pytest.raises(ValueError, match="cannot read"):
        task.input_features(b"\xff\xfe")


def test_draws_are_deterministic_and_fresh(task, cfg, data_dir):
    first, again = draws(task, cfg, cfg.data, 10), draws(task, cfg, cfg.data, 10)
    assert first == again
    dataset = {
        e.input.read_bytes() for s in ("train", "val", "test") for e in task.read_split(data_dir, s)
    }
    assert not set(first) & dataset
    # The generator seeds its messages with the task's sample_rng: split s is stream s.
    assert task.sample_rng(0, 1, 2).random() == message_rng(0, 1, 2).random()


@pytest.mark.parametrize(
    ("scenario", "feature"),
    [("longer", "chars"), ("typos", "unknown_word_share"), ("shouting", "upper_share")],
)
def test_each_scenario_moves_its_feature(task, cfg, scenario, feature):
    base = draws(task, cfg, cfg.data)
    drifted = task.drifted_recipe(cfg.data, scenario, 1.0)
    assert isinstance(drifted, DictConfig) and drifted is not cfg.data
    moved = draws(task, cfg, drifted)
    assert mean(task, moved, feature) > 1.5 * mean(task, base, feature) + 0.01
    assert cfg.data.typo_rate == 0.02 and cfg.data.shout_rate == 0.05  # original untouched


def test_drift_arguments_are_checked(task, cfg):
    with pytest.raises(ValueError, match="longer"):
        task.drifted_recipe(cfg.data, "sideways", 1.0)
    with pytest.raises(ValueError, match="> 0"):
        task.drifted_recipe(cfg.data, "typos", -1.0)
    assert task.drifted_recipe(dict(cfg.data), "typos", 1.0)["typo_rate"] == pytest.approx(0.12)


def test_model_view(task, cfg):
    module = task.module(cfg).eval()
    inputs = draws(task, cfg, cfg.data, 7)
    view = task.model_view(module, inputs)
    assert view["confidence"].shape == (7,) and view["confidence"].dtype == np.float64
    assert view["embedding"].shape == (7, cfg.model.embed_dim)
    assert set(view["predicted_class"]) <= set(cfg.task.classes)
    ids = torch.from_numpy(np.stack([featurize(x.decode(), 8192, 192) for x in inputs]))
    with torch.inference_mode():
        probs = torch.softmax(module(ids), -1).numpy()
    np.testing.assert_allclose(view["confidence"], probs.max(1), rtol=1e-5)
    empty = task.model_view(module, [])
    assert empty["embedding"].shape == (0, cfg.model.embed_dim)


def test_ground_truth_labels_captured_bytes(task, cfg, data_dir, tmp_path):
    truth = task.ground_truth([data_dir])
    assert len(truth) == 325
    example = task.read_split(data_dir, "val")[3]
    record = truth[hashlib.sha256(example.input.read_bytes()).hexdigest()]
    assert record["intent"] == example.label["intent"]
    assert record["source"] == {
        "dir": str(data_dir),
        "split": "val",
        "file": "texts/val/val_00003.txt",
    }
    with pytest.raises(FileNotFoundError, match="textintent layout"):
        task.ground_truth([tmp_path])


def test_quality_of_an_empty_split_is_none(task, cfg, data_dir, tmp_path):
    task.write_split(tmp_path / "version", "test", [])
    assert task.quality(cfg, task.module(cfg), tmp_path / "version", "test") is None
    q = task.quality(cfg, task.module(cfg), data_dir, "val")
    assert 0.0 <= q <= 1.0


def test_a_feedback_version_merges_into_valid_data(task, cfg, data_dir, tmp_path):
    """liveml's own feedback code over this layout: label captured messages, write a
    version, merge it into a copy of the data; the result still validates."""
    from liveml.data.feedback import merge, write_version

    drifted = make_cfg(make_project(tmp_path / "p"), "data.seed=5", "data.typo_rate=0.1")
    task.generate(drifted, tmp_path / "production")
    captured = tmp_path / "captures"
    captured.mkdir()
    inputs = []
    for i, e in enumerate(task.read_split(tmp_path / "production", "test")[:40]):
        inputs.append(captured / f"{i:03d}.txt")
        inputs[-1].write_bytes(e.input.read_bytes())
    # A SHOUTED copy of a test message of the data: a leak the task must refuse to merge.
    shouted = task.read_split(data_dir, "test")[0]
    inputs.append(captured / "shouted.txt")
    inputs[-1].write_bytes(shouted.input.read_bytes().upper())
    truth = task.ground_truth([tmp_path / "production"])
    truth[hashlib.sha256(inputs[-1].read_bytes()).hexdigest()] = {"intent": shouted.label["intent"]}

    # holdout 0: every labelled message goes to the version's train split.
    counts = write_version(task, inputs, truth, tmp_path / "fb" / "v0001", holdout=0.0)
    assert (counts["train"], counts["test"]) == (41, 0)
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    merged = merge(task, data, [tmp_path / "fb" / "v0001"])
    [entry] = merged["versions"]
    assert entry["skipped"] == {"duplicate": 0, "same_text": 1}
    assert merged["train"] == 40
    train = task.read_split(data, "train")
    assert len(train) == 240 and train[-1].stem == "fb-v0001-00039"
    assert train[-1].label["feedback"] == "v0001" and "sha256" in train[-1].label
    assert task.validate(cfg, data)["problems"] == []


def test_feedback_of_other_intents_cannot_join(task, data_dir, tmp_path):
    from liveml.tasks.base import Example

    message = task.read_split(data_dir, "test")[0].input
    with pytest.raises(ValueError, match="weather"):
        task.feedback_rejects(data_dir, [Example(message, {"intent": "weather"})])
