"""`train(cfg)`: the one training function (DVC train stage, Hydra entry point, reproduce).

It records lineage before training, trains deterministically, checkpoints every epoch under
`paths.checkpoints/<fingerprint[:16]>/` (a killed run resumes from there: same fingerprint,
same run), and writes the model folder (weights.pt, run.json, metrics.csv, config.yaml) as a
whole, atomically.

Checkpoints are data, not code: each is written with a sidecar `<name>.sha256.json` (its
sha256, size, epoch and fingerprint), and one is resumed only if it matches its sidecar, and
then loaded weights-only (a pickle cannot run code). A corrupted or truncated checkpoint is
skipped for the newest intact one (or a fresh start), never resumed silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from liveml.core.project import Project

WEIGHTS = "weights.pt"
RECORD = "run.json"
METRICS_CSV = "metrics.csv"
CONFIG_YAML = "config.yaml"
LAST_CKPT = "last.ckpt"
CKPT_KEY = "liveml"  # where the lineage of a checkpoint is stored inside it
CKPT_GLOB = "*.ckpt"
# The sidecar of checkpoint `<name>`: `<name>.sha256.json`, written (atomically) right after it.
CKPT_HASH_SUFFIX = ".sha256.json"


class ResumeError(RuntimeError):
    """A checkpoint cannot be resumed (another run holds it, or it belongs to another run)."""


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded: no sidecar, or size/sha256 differ from the
    sidecar's (corrupted, truncated or replaced). The message names the file and why."""


def _log(msg: str) -> None:
    # stderr, unbuffered: this line is how a user (and the kill/resume test) sees a resume.
    print(f"liveml: {msg}", file=sys.stderr, flush=True)


def train(
    cfg,
    out_dir: str | os.PathLike | None = None,
    *,
    project: Project | None = None,
    resume: bool = True,
    sweep: dict | None = None,
) -> dict:
    """Train the task's model on its recipe's data; write the model folder; return the record.

    `out_dir` defaults to `paths.model`. With `resume`, an epoch checkpoint of the same
    fingerprint is continued; without it, such checkpoints are discarded first. `sweep` says
    which sweep the run belongs to (see `tracking.sweeps`); a DVC experiment is detected itself.
    Under DDP only global rank 0 tracks and saves; the other processes train and return.
    """
    import yaml

    from liveml.core.atomic import atomic_dir, atomic_write_json
    from liveml.core.config import check, to_dict
    from liveml.data.datasets import dataset_for
    from liveml.tasks import get_task
    from liveml.tracking.lineage import new_record, weights_sha256
    from liveml.tracking.loggers import open_tracking
    from liveml.tracking.runs import RunStore
    from liveml.tracking.sweeps import dvc_experiment
    from liveml.training.pruning import callbacks_from_env

    # Re-check from plain data: `check` of an already-checked config fails (schema identity).
    cfg = check(to_dict(cfg) if not isinstance(cfg, dict) else cfg)
    project = project or Project.find()
    task = get_task(cfg.task.name)
    data_rel = dataset_for(cfg, project)
    data_dir = project.path(data_rel)
    record = new_record(cfg, project, [data_rel])
    record["environment"]["numerics"] = _numerics()
    fp = record["fingerprint"]
    work = project.path(cfg.paths.checkpoints) / fp[:16]
    out = Path(out_dir) if out_dir is not None else project.path(cfg.paths.model)
    extra = callbacks_from_env()
    if global_rank(cfg) != 0:
        return _train_follower(cfg, task, data_dir, record, work, extra)

    with _exclusive(work), _deterministic(cfg):
        start, draft = _resume_start(work, fp) if resume else (None, None)
        if start is None:
            _clear(work)
        else:
            # Same fingerprint, same run: keep its id so the run store and W&B show one run.
            record["run_id"], record["created"] = draft["run_id"], draft["created"]
            _log(
                f"resuming run {record['run_id']} from {start['path']} "
                f"({start['epochs_done']} epoch(s) done, step {start['global_step']})"
            )
        record["resumed_from"] = start
        record["sweep"] = sweep or dvc_experiment()

        resumed = start is not None
        with open_tracking(cfg, record, work, project=project, resume=resumed) as tr:
            # W&B is starting in the background meanwhile (tracking.loggers.BackgroundWandb).
            if resumed:
                tr.csv.truncate(start["epochs_done"] - 1)
            record["wandb"] = tr.planned()
            atomic_write_json(work / RECORD, record)  # the draft a resumed run continues

            dm = task.datamodule(cfg, data_dir)
            module = task.module(cfg)
            trainer = _trainer(cfg, work, fp, record["run_id"], tr.loggers, [*tr.callbacks, *extra])
            fit_start = time.perf_counter()
            _fit(trainer, module, dm, start)
            # Wall time of this process's fit (after a resume: the remaining epochs only).
            record["train_seconds"] = round(time.perf_counter() - fit_start, 2)
            record["status"] = _status(trainer, extra)
            record["world_size"] = int(trainer.world_size)

            state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
            record["metrics"] = _final_metrics(trainer, tr.csv.rows)
            record["weights_sha256"] = weights_sha256(state)
            record["epochs"] = int(trainer.current_epoch)
            record["global_step"] = int(trainer.global_step)
            record["wandb"] = tr.info()  # the W&B run's start is long done by now
            tr.summary(weights_sha256=record["weights_sha256"], liveml_run_id=record["run_id"])
            # Queued: W&B finishes while the model folder and the record are written.
            tr.finish()

            import torch

            config_text = yaml.safe_dump(record["config"], sort_keys=False)
            with atomic_dir(out) as tmp:
                torch.save(state, tmp / WEIGHTS)
                shutil.copyfile(work / METRICS_CSV, tmp / METRICS_CSV)
                (tmp / CONFIG_YAML).write_text(config_text)
                RunStore.for_project(project, cfg).save(
                    record,
                    files={METRICS_CSV: work / METRICS_CSV, CONFIG_YAML: tmp / CONFIG_YAML},
                )
                atomic_write_json(tmp / RECORD, record)
        # The run is complete and stored: its checkpoints would only resume a finished run.
        _clear(work, remove=True)
    return record


def global_rank(cfg) -> int:
    """This process's rank in a DDP run, from the variables launchers set (0 when alone):
    torchrun's RANK, SLURM's SLURM_PROCID, else Lightning's NODE_RANK and LOCAL_RANK."""
    env = os.environ
    for var in ("RANK", "SLURM_PROCID"):
        if env.get(var, "").isdigit():
            return int(env[var])
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    return int(env.get("NODE_RANK", 0)) * devices + int(env.get("LOCAL_RANK", 0))


def _train_follower(cfg, task, data_dir: Path, record: dict, work: Path, extra: list) -> dict:
    """A DDP process other than rank 0: the same fit (same checkpoint to resume), no lock,
    no tracking, no saving; rank 0 owns those."""
    with _deterministic(cfg):
        start, _ = _resume_start(work, record["fingerprint"])
        trainer = _trainer(cfg, work, record["fingerprint"], record["run_id"], [], extra)
        _fit(trainer, task.module(cfg), task.datamodule(cfg, data_dir), start)
    record["status"] = _status(trainer, extra)
    return record


def _fit(trainer, module, dm, start: dict | None) -> None:
    with warnings.catch_warnings():
        # The folder holds this run's own lineage files and, on resume, checkpoints.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* not empty")
        trainer.fit(
            module,
            datamodule=dm,
            ckpt_path=start["path"] if start else None,
            weights_only=True,  # also enforced by _HashedCheckpointIO.load_checkpoint
        )
    if trainer.interrupted or trainer.state.status != "finished":
        raise RuntimeError(f"training stopped early ({trainer.state.status})")


def _status(trainer, extra: list) -> str:
    """ "finished", or why a callback stopped the run early (e.g. "pruned" by an Optuna trial)."""
    return next((cb.run_status for cb in extra if getattr(cb, "run_status", None)), "finished")


def load_trained(model_dir: str | os.PathLike, *, check_hash: bool = True) -> tuple[Any, dict]:
    """(module in eval mode, run record) from a model folder or a run folder with weights.pt.

    Weights load with `weights_only=True`; with `check_hash` they must match the record's
    `weights_sha256`, so a swapped or corrupted file is caught before it is evaluated.
    """
    import torch

    from liveml.core.config import check, upgraded
    from liveml.tasks import get_task
    from liveml.tracking.lineage import weights_sha256

    model_dir = Path(model_dir)
    record = _read_json(model_dir / RECORD)
    cfg = check(upgraded(record["config"]), source=str(model_dir / RECORD))
    state = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    if check_hash and record.get("weights_sha256") not in (None, weights_sha256(state)):
        raise ValueError(
            f"{model_dir / WEIGHTS} does not match the weights_sha256 in its run.json; "
            "the folder was modified. Fix: retrain (`dvc repro train`) or restore it "
            "(`dvc checkout`)."
        )
    module = get_task(cfg.task.name).module(cfg)
    module.load_state_dict(state)
    return module.eval(), record


def _trainer(cfg, work: Path, fp: str, run_id: str, loggers: list, extra: list):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(
        dirpath=work,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_top_k=1,  # no monitor: keeps the newest epoch checkpoint
        # last.ckpt: a symlink to it, not a second copy (its sidecar is the target's).
        save_last="link",
        # After validation and the epoch-level logging: the checkpoint is a clean boundary.
        save_on_train_epoch_end=True,
        enable_version_counter=False,  # always overwrite last.ckpt, also after a resume
    )
    t = cfg.trainer
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        # liveml's samplers shard themselves (liveml.data.sampling.shard), keeping the epoch order.
        use_distributed_sampler=False,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        precision=t.precision,
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        limit_val_batches=t.limit_val_batches,
        logger=loggers,
        callbacks=[checkpoint, _Lineage(fp, run_id, int(cfg.seed)), *extra],
        plugins=[_HashedCheckpointIO()],
        default_root_dir=work,
        enable_progress_bar=True,
    )


class _Lineage(Callback):
    """Stamps checkpoints with their run's fingerprint; seeds global RNGs per epoch.

    The data pipeline is already a pure function of (seed, epoch, index); re-seeding the global
    RNGs from (seed, epoch) makes any other random op independent of whether the run resumed.
    """

    def __init__(self, fingerprint: str, run_id: str, seed: int):
        self.fingerprint, self.run_id, self.seed = fingerprint, run_id, seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import random

        import numpy as np
        import torch

        s = (self.seed * 1_000_003 + trainer.current_epoch) % 2**32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = {"fingerprint": self.fingerprint, "run_id": self.run_id}


class _HashedCheckpointIO(TorchCheckpointIO):
    """Checkpoint files with a hash sidecar: saved atomically, then `<name>.sha256.json`;
    loaded only when they match it, and weights-only; removed together with it."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(
        self, path, map_location=lambda storage, loc: storage, weights_only=None
    ) -> dict:
        # Whatever the caller asks for: verified first, then weights-only (no code on load).
        return load_checkpoint(Path(path), map_location=map_location)

    def remove_checkpoint(self, path) -> None:
        path = Path(path)
        if path.is_symlink():  # a link's sidecar is its target's: leave both
            path.unlink()
            return
        path.with_name(path.name + CKPT_HASH_SUFFIX).unlink(missing_ok=True)
        if path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def save_checkpoint(checkpoint: dict, path: Path) -> dict:
    """Write `checkpoint` to `path` atomically, then its sidecar; returns the sidecar's data.

    Serialized exactly as Lightning does (torch.save to memory, then one write), so the
    checkpoint's bytes do not depend on this wrapper.
    """
    import torch

    from liveml.core.atomic import atomic_write_bytes, atomic_write_json

    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    stamp = checkpoint.get(CKPT_KEY) or {}
    meta = {
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "fingerprint": stamp.get("fingerprint"),
    }
    # After the checkpoint: a crash in between leaves a mismatch (skipped), never a false match.
    atomic_write_json(_sidecar(path), meta)
    return meta


def _sidecar(path: Path) -> Path:
    """The sidecar of checkpoint `path` (of the file a link points to: last.ckpt may be one)."""
    target = path.resolve() if path.is_symlink() else path
    return target.with_name(target.name + CKPT_HASH_SUFFIX)


def _checkpoint_meta(path: Path) -> dict:
    """The sidecar of `path`, checked for shape; CheckpointError when missing or unusable."""
    side = _sidecar(path)
    try:
        meta = json.loads(side.read_bytes())
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{path} has no recorded hash ({side.name} is missing): it was not written by this "
            "version of liveml, or its write was cut short"
        ) from e
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: its hash sidecar {side} is unreadable ({e})") from e
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("sha256"), str)
        and isinstance(meta.get("bytes"), int)
        and isinstance(meta.get("epoch"), int)
        and isinstance(meta.get("global_step"), int)
    )
    if not ok:
        raise CheckpointError(f"{path}: its hash sidecar {side} does not hold sha256/bytes/epoch")
    return meta


def verify_checkpoint(path: Path) -> dict:
    """Check `path` against its sidecar before anything unpickles it: same size (so a
    truncated or swollen file is refused before it is read), same sha256. Returns the sidecar."""
    meta = _checkpoint_meta(path)
    size = path.stat().st_size
    if size != meta["bytes"]:
        raise CheckpointError(
            f"{path} is {size} bytes, but {meta['bytes']} were written: truncated or replaced"
        )
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"{path} does not match the sha256 recorded when it was written: corrupted"
        )
    return meta


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A verified checkpoint, loaded weights-only: tensors and plain data, no code runs."""
    import torch

    verify_checkpoint(path)
    return torch.load(path, map_location=map_location, weights_only=True)


def _resume_start(work: Path, fp: str) -> tuple[dict | None, dict | None]:
    """(resume point, draft record) of `work`, or (None, None) when there is nothing intact to
    resume: no intact checkpoint of `fp`, or no readable draft to take the run id from."""
    start = _resume_point(work, fp)
    draft = _read_draft(work) if start is not None else None
    return (start, draft) if draft is not None else (None, None)


def _resume_point(work: Path, fp: str) -> dict | None:
    """The newest intact checkpoint in `work` of fingerprint `fp`, or None (start fresh).

    Candidates are ordered by the step their sidecars record (last.ckpt first on a tie); each
    is verified against its sidecar, then loaded weights-only to confirm its stamp. A damaged
    one is reported and the next older one tried, so a corrupted last.ckpt falls back to the
    epoch checkpoint instead of resuming different weights or restarting from scratch.
    """
    import torch

    if not (work / RECORD).is_file():
        return None
    candidates = []
    for path in sorted(work.glob(CKPT_GLOB)):
        if not path.is_file():  # a dangling link
            continue
        try:
            meta = _checkpoint_meta(path)
        except CheckpointError as e:
            _log(f"ignoring checkpoint: {e}")
            continue
        if meta.get("fingerprint") != fp:
            _log(f"ignoring {path}: it belongs to fingerprint {meta.get('fingerprint')}, not {fp}")
            continue
        candidates.append((meta["global_step"], meta["epoch"], path.name == LAST_CKPT, path))
    for *_, path in sorted(candidates, key=lambda c: c[:3], reverse=True):
        try:
            verify_checkpoint(path)
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            stamp = ckpt.get(CKPT_KEY) or {}
            point = {
                "path": str(path),
                "epochs_done": int(ckpt["epoch"]) + 1,
                "global_step": int(ckpt["global_step"]),
            }
        except Exception as e:  # a damaged checkpoint is not worth failing the run over
            _log(f"ignoring checkpoint {path}: {e}")
            continue
        if stamp.get("fingerprint") != fp:
            _log(f"ignoring {path}: it belongs to fingerprint {stamp.get('fingerprint')}, not {fp}")
            continue
        return point
    return None


def _read_draft(work: Path) -> dict | None:
    """The draft run record a resumed run continues (its id and start time), or None."""
    try:
        draft = json.loads((work / RECORD).read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        _log(f"ignoring the checkpoints in {work}: unreadable {RECORD} ({e})")
        return None
    if not (
        isinstance(draft, dict)
        and isinstance(draft.get("run_id"), str)
        and isinstance(draft.get("created"), str)
    ):
        _log(f"ignoring the checkpoints in {work}: its {RECORD} has no run_id/created")
        return None
    return draft


def _final_metrics(trainer, rows: list[dict]) -> dict[str, float]:
    """Last logged value of each metric, overlaid with the trainer's final callback metrics.

    The CSV part keeps the metrics of a run resumed after its last epoch (nothing left to fit,
    so Lightning has no callback metrics).
    """
    metrics: dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, int | float):
                metrics[k] = float(v)
    for k, v in trainer.callback_metrics.items():
        metrics[k] = float(v)
    return dict(sorted(metrics.items()))


def _numerics() -> dict:
    """This process's CPU numerics (core/numerics.py), warning when the AVX2 pin came too late."""
    from liveml.core import numerics

    state = numerics.describe()
    wanted = (state["aten_cpu_capability"] or "").lower()
    if wanted and state["aten_capability"].lower() != wanted:
        _log(
            f"warning: CPU kernels run on {state['aten_capability']}, not the pinned {wanted} "
            "path (torch was initialised before liveml was imported): the weights will "
            "match only on this CPU generation; fix: import liveml before torch"
        )
    return state


@contextlib.contextmanager
def _deterministic(cfg) -> Iterator[None]:
    """Seeded, deterministic kernels, fixed thread count; restores the process settings after."""
    import lightning as L
    import torch

    was_det = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(cfg.trainer.num_threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det)
        torch.set_num_threads(threads)


def _exclusive(work: Path):
    """One process per checkpoint folder: two trainings of one fingerprint would clobber it."""
    from liveml.core.locks import exclusive

    return exclusive(
        work / ".lock",
        busy=ResumeError(
            f"another process is training the same run (checkpoints in {work}); wait for "
            "it to finish, or stop it."
        ),
    )


def _clear(work: Path, remove: bool = False) -> None:
    """Empty `work` but keep its lock (or remove the whole folder once the run is stored)."""
    if remove:
        shutil.rmtree(work, ignore_errors=True)
        return
    for p in work.iterdir():
        if p.name == ".lock":
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
