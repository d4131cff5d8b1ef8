"""Checkpoints are data, not code: each has a hash sidecar; a damaged one is never resumed (the
newest intact one is), and a crafted pickle never runs, whatever its sidecar says."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from liveml.training import run as training
from liveml.training.run import (
    CKPT_HASH_SUFFIX,
    CheckpointError,
    _HashedCheckpointIO,
    _resume_point,
    save_checkpoint,
    train,
    verify_checkpoint,
)

FP = "f" * 64


class Payload:
    """Unpickling this creates `marker`: the stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted(path: Path, marker: Path, fp: str = FP, *, legacy: bool = False) -> None:
    """A checkpoint-shaped pickle at `path` that runs code when fully unpickled."""
    ckpt = {"epoch": 0, "global_step": 2, "liveml": {"fingerprint": fp}, "x": Payload(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(ckpt))
    else:
        torch.save(ckpt, path)


def forge_sidecar(path: Path, fp: str = FP) -> None:
    """What an attacker who can write the folder can also do: a matching sidecar."""
    data = path.read_bytes()
    side = path.with_name(path.name + CKPT_HASH_SUFFIX)
    side.write_text(
        json.dumps(
            {
                "file": path.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "epoch": 0,
                "global_step": 2,
                "fingerprint": fp,
            }
        )
    )


@pytest.fixture
def work(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"run_id": "r", "created": "2026-01-01T00:00:00Z"}))
    return work


# --- a checkpoint cannot run code ---------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_crafted_pickle_is_never_unpickled_with_code(work, tmp_path, legacy, capfd):
    marker = tmp_path / "marker"
    last = work / "last.ckpt"
    crafted(last, marker, legacy=legacy)

    # No sidecar: not even opened as a pickle.
    point = _resume_point(work, FP)
    assert not marker.exists(), "the checkpoint ran code"
    assert point is None and "no recorded hash" in capfd.readouterr().err

    # A sidecar that matches (the folder's writer forged both): loaded weights-only, refused.
    forge_sidecar(last)
    point = _resume_point(work, FP)
    assert not marker.exists(), "the checkpoint ran code"
    assert point is None and "ignoring checkpoint" in capfd.readouterr().err
    with pytest.raises(pickle.UnpicklingError):
        _HashedCheckpointIO().load_checkpoint(last, weights_only=False)
    assert not marker.exists(), "the checkpoint ran code"


def test_training_ignores_a_crafted_last_checkpoint(
    tiny_trainable, tiny_cfg, tmp_path, monkeypatch
):
    cfg = tiny_cfg("trainer.max_epochs=1")
    work = _work_dir(cfg, tiny_trainable)
    work.mkdir(parents=True)
    (work / "run.json").write_text(json.dumps({"run_id": "x", "created": "2026-01-01T00:00:00Z"}))
    marker = tmp_path / "marker"
    crafted(work / "last.ckpt", marker, fp=_fingerprint(cfg, tiny_trainable))
    forge_sidecar(work / "last.ckpt", fp=_fingerprint(cfg, tiny_trainable))

    try:
        record = train(cfg, out_dir=tmp_path / "m", project=tiny_trainable)
    finally:
        assert not marker.exists(), "the checkpoint ran code"
    assert record["resumed_from"] is None and record["epochs"] == 1


# --- a damaged checkpoint is never resumed ------------------------------------------------


def test_sidecars_match_and_are_removed_with_their_checkpoint(work):
    state = {"epoch": 3, "global_step": 40, "liveml": {"fingerprint": FP}, "w": torch.ones(4)}
    meta = save_checkpoint(state, work / "epoch003.ckpt")
    assert meta["epoch"] == 3 and meta["fingerprint"] == FP
    assert verify_checkpoint(work / "epoch003.ckpt") == meta
    assert torch.equal(
        _HashedCheckpointIO().load_checkpoint(work / "epoch003.ckpt")["w"], state["w"]
    )
    # Issue 15 links last.ckpt to the epoch checkpoint: the link is checked by its target's hash.
    (work / "last.ckpt").symlink_to("epoch003.ckpt")
    assert _resume_point(work, FP)["path"] == str(work / "last.ckpt")
    _HashedCheckpointIO().remove_checkpoint(work / "last.ckpt")  # the link only
    assert verify_checkpoint(work / "epoch003.ckpt") == meta
    (work / "last.ckpt").symlink_to("epoch003.ckpt")
    _HashedCheckpointIO().remove_checkpoint(work / "epoch003.ckpt")
    assert sorted(p.name for p in work.iterdir()) == ["last.ckpt", "run.json"]
    assert _resume_point(work, FP) is None  # a dangling link


def test_stopped_run_resumes_through_its_last_link_and_never_from_damage(
    tiny_trainable, tiny_cfg, tmp_path, monkeypatch, capfd
):
    cfg = tiny_cfg("trainer.max_epochs=3")
    reference = train(cfg, out_dir=tmp_path / "ref", project=tiny_trainable)

    # The same run, stopped in its third epoch: epoch001.ckpt holds epoch 1, last.ckpt links it.
    original = training._Lineage.on_train_epoch_start

    def stop_in_epoch_2(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise RuntimeError("stopped in epoch 2")
        original(self, trainer, pl_module)

    monkeypatch.setattr(training._Lineage, "on_train_epoch_start", stop_in_epoch_2)
    with pytest.raises(RuntimeError, match="stopped in epoch 2"):
        train(cfg, out_dir=tmp_path / "m", project=tiny_trainable)
    monkeypatch.setattr(training._Lineage, "on_train_epoch_start", original)
    (work,) = tiny_trainable.path(cfg.paths.checkpoints).iterdir()
    ckpts = sorted(p.name for p in work.iterdir() if "ckpt" in p.name)
    # One copy per epoch (issue 15): last.ckpt is a link; epoch000's sidecar went with it.
    assert ckpts == ["epoch001.ckpt", "epoch001.ckpt" + CKPT_HASH_SUFFIX, "last.ckpt"]
    last, epoch1 = work / "last.ckpt", work / "epoch001.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch001.ckpt"
    snapshot = shutil.copytree(work, tmp_path / "snapshot", symlinks=True)
    fp = reference["fingerprint"]
    assert _resume_point(work, fp)["path"] == str(last)

    # Truncated or swollen (through either name): refused by its size before it is read, and
    # with no intact checkpoint left the run starts fresh.
    good = epoch1.read_bytes()
    epoch1.write_bytes(good[: len(good) // 2])
    assert _resume_point(work, fp) is None
    epoch1.write_bytes(good + b"\0" * 4096)
    assert _resume_point(work, fp) is None
    with pytest.raises(CheckpointError, match=r"bytes, but \d+ were written"):
        verify_checkpoint(last)
    capfd.readouterr()

    # A last.ckpt copied with its own sidecar (what liveml wrote before the link) with 64
    # flipped bytes (weights that still load): skipped for epoch001.ckpt, and the resumed run
    # ends with the uninterrupted run's weights.
    shutil.rmtree(work)
    shutil.copytree(snapshot, work, symlinks=True)
    last.unlink()
    data = bytearray(good)
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    last.write_bytes(bytes(data))
    meta = json.loads((work / ("epoch001.ckpt" + CKPT_HASH_SUFFIX)).read_text())
    (work / ("last.ckpt" + CKPT_HASH_SUFFIX)).write_text(json.dumps({**meta, "file": "last.ckpt"}))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        verify_checkpoint(last)
    resumed = train(cfg, out_dir=tmp_path / "m", project=tiny_trainable)
    assert "corrupted" in capfd.readouterr().err
    assert resumed["resumed_from"] == {"path": str(epoch1), "epochs_done": 2, "global_step": 4}
    assert resumed["fingerprint"] == fp
    assert resumed["weights_sha256"] == reference["weights_sha256"]
    assert resumed["metrics"] == reference["metrics"]

    # Through the link, intact: resumed from last.ckpt, the same weights again.
    shutil.copytree(snapshot, work, symlinks=True)
    resumed = train(cfg, out_dir=tmp_path / "m2", project=tiny_trainable)
    assert resumed["resumed_from"] == {"path": str(last), "epochs_done": 2, "global_step": 4}
    assert resumed["weights_sha256"] == reference["weights_sha256"]
    assert (tmp_path / "m2" / "metrics.csv").read_text() == (
        tmp_path / "ref" / "metrics.csv"
    ).read_text()


def _fingerprint(cfg, project) -> str:
    """The fingerprint `train` computes for `cfg` (it names the checkpoint folder)."""
    from liveml.core.config import check, to_dict
    from liveml.data.datasets import dataset_for
    from liveml.tracking.lineage import new_record

    cfg = check(to_dict(cfg))
    return new_record(cfg, project, [dataset_for(cfg, project)])["fingerprint"]


def _work_dir(cfg, project) -> Path:
    return project.path(cfg.paths.checkpoints) / _fingerprint(cfg, project)[:16]
