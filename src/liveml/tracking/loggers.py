"""Experiment tracking for one training run: W&B (offline by default) plus a local metrics.csv.

An offline W&B run only writes a binary .wandb file, so the metrics that liveml reads back
(run.json, comparisons, DVC plots) come from the CSV log, which is always written.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from liveml.core.atomic import atomic_write_text
from liveml.core.project import Project

METRICS_CSV = "metrics.csv"
WANDB_ID_FILE = "wandb_id"
# Record fields that go into the W&B run's config next to the resolved config.
RECORD_FIELDS = (
    "run_id",
    "task",
    "created",
    "fingerprint",
    "fingerprint_parts",
    "code",
    "data",
    "environment",
    "sweep",
)


class MetricsCSVLogger(Logger):
    """Lightning logger writing one wide CSV (step, epoch, then one column per metric).

    The file is rewritten atomically after every logging call, so a killed run keeps a
    readable log; on resume, rows after the checkpoint's epoch are dropped (`truncate`).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [
                    {k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)
                ]

    @property
    def name(self) -> str:
        return "metrics"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Hyperparameters live in the run record and config.yaml, not in the metric log."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.rows.append({"step": step, **{k: _number(v) for k, v in metrics.items()}})
        self.write()

    def truncate(self, last_epoch: int) -> None:
        """Keep rows of epochs <= `last_epoch`: what a checkpoint of that epoch had seen."""
        self.rows = [r for r in self.rows if r.get("epoch", 0) <= last_epoch]
        self.write()

    def write(self) -> None:
        keys = sorted({k for r in self.rows for k in r} - {"step", "epoch"})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["step", "epoch", *keys], lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _number(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v


def _new_wandb_id() -> str:
    """An id in W&B's alphabet (lowercase letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_mode(cfg) -> str:
    """`WANDB_MODE` from the environment wins over `logger.mode` (CI, sweeps set it)."""
    return os.environ.get("WANDB_MODE") or cfg.logger.mode


class Tracking:
    """The loggers of one run and how to close them; `with` closes with exit code 1 on error."""

    def __init__(self, csv_logger: MetricsCSVLogger, wandb_logger=None, mode: str = "disabled"):
        self.csv = csv_logger
        self.wandb_logger = wandb_logger
        self.mode = mode
        self.closed = False

    @property
    def loggers(self) -> list:
        return [lg for lg in (self.wandb_logger, self.csv) if lg is not None]

    @property
    def wandb_run(self):
        return None if self.wandb_logger is None else self.wandb_logger.experiment

    def info(self) -> dict:
        """What the run record keeps about the W&B run: id, mode, local folder."""
        run = self.wandb_run
        if run is None:
            return {"id": None, "mode": self.mode, "dir": None}
        return {"id": run.id, "mode": self.mode, "dir": str(run.settings.sync_dir)}

    def close(self, exit_code: int = 0) -> None:
        """Write the CSV and finish the W&B run (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.csv.write()
        if self.wandb_logger is not None and self.wandb_logger._experiment is not None:
            self.wandb_logger._experiment.finish(exit_code=exit_code)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exit_code=0 if exc_type is None else 1)


def open_tracking(
    cfg,
    record: Mapping,
    run_dir: str | os.PathLike,
    *,
    project: Project | None = None,
    resume: bool = False,
) -> Tracking:
    """Start the loggers of one training run; `run_dir` gets metrics.csv (and the W&B id).

    W&B gets the resolved config plus the run record's lineage fields (fingerprint and its
    parts, sweep) as its config, the run id as its name, and the record's sweep name (if any)
    as its group, so W&B's grouping and parallel-coordinates views line up a sweep's runs by
    the keys it varied. With `resume`, the CSV continues and the W&B run of the same id is
    resumed, so a killed-and-resumed training is one W&B run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_logger = MetricsCSVLogger(run_dir / METRICS_CSV, resume=resume)
    if not resume:
        csv_logger.write()  # start a fresh, empty log (drops a stale one)
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return Tracking(csv_logger, None, mode)

    from lightning.pytorch.loggers import WandbLogger

    from liveml.core.config import to_dict

    project = project or Project.find()
    wandb_dir = project.home_path(cfg.logger.dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / WANDB_ID_FILE
    resumed_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    config = to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    config["lineage"] = {k: record.get(k) for k in RECORD_FIELDS}
    sweep = record.get("sweep") or {}
    if sweep:
        # The keys the sweep varies, at the top level: W&B's parallel coordinates pick them.
        config["sweep_params"] = dict(sweep.get("overrides") or {})

    def start(run_id: str) -> Tracking:
        atomic_write_text(id_file, run_id + "\n")
        logger = WandbLogger(
            name=record.get("run_id"),
            save_dir=str(wandb_dir),
            id=run_id,
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=sweep.get("name"),
            job_type="train",
            tags=[str(record.get("task")), *([sweep["kind"]] if sweep.get("kind") else [])],
            config=config,
            mode=mode,
        )
        # Lightning always passes `anonymous`, which W&B now warns about on every init.
        logger._wandb_init.pop("anonymous", None)
        tracking = Tracking(csv_logger, logger, mode)
        try:
            # Start the W&B run now: its id goes into the record, and a run that fails before
            # Lightning first logs still gets a W&B run that is finished with the failure.
            _ = logger.experiment
        except BaseException:
            tracking.closed = True  # no W&B run to finish
            raise
        return tracking

    if resumed_id:
        try:
            return start(resumed_id)
        except Exception as e:
            # A W&B service shared with the killed process may still hold its run open;
            # the training still resumes, under a new W&B run.
            if "in use" not in str(e):
                raise
            print(
                f"liveml: W&B run {resumed_id} is still held open ({e}); logging the resumed "
                "training to a new W&B run",
                file=sys.stderr,
                flush=True,
            )
    return start(_new_wandb_id())
