"""Experiment tracking for one training run: W&B (offline by default) plus a local metrics.csv.

An offline W&B run only writes a binary .wandb file, so the metrics that liveml reads back
(run.json, comparisons, DVC plots) come from the CSV log, which is always written.

Neither is on the training's critical path: W&B runs in a process of its own
(`liveml.tracking.wandb_worker`), started while the data, model and trainer are set up; the
training sends it its calls in order and never waits for it, except for the run's id and folder
after the fit (long known by then) and its finish, which overlaps the writing of the model folder
and the run record. The CSV is rewritten at epoch boundaries and before each checkpoint (so a
resumed run's log holds exactly what its checkpoint had seen), not on every logging call.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import queue
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, ProgressBar
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

    Rows are kept in memory and the file is rewritten atomically by `write` (FlushMetricsCSV
    calls it at each epoch start and before each checkpoint; the run's close calls it last), so
    a killed run keeps a readable log of what its last checkpoint had seen; on resume, rows
    after the checkpoint's epoch are dropped (`truncate`).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.dirty = False
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
        self.dirty = True

    def truncate(self, last_epoch: int) -> None:
        """Keep rows of epochs <= `last_epoch`: what a checkpoint of that epoch had seen."""
        self.rows = [r for r in self.rows if r.get("epoch", 0) <= last_epoch]
        self.write()

    def flush(self) -> None:
        """Write the file if rows were logged since it was last written."""
        if self.dirty:
            self.write()

    def write(self) -> None:
        self.dirty = False
        keys = sorted({k for r in self.rows for k in r} - {"step", "epoch"})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["step", "epoch", *keys], lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class FlushMetricsCSV(Callback):
    """Writes the CSV log at each training epoch start (the previous epoch's rows, including
    those Lightning logs after its checkpoint) and while each checkpoint is being built (before
    its file is written), so the log on disk always covers what the newest checkpoint saw."""

    def __init__(self, csv_logger: MetricsCSVLogger):
        self.csv = csv_logger

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.csv.flush()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.csv.flush()


class LineProgressBar(ProgressBar):
    """Lightning's progress bar when stderr is not a terminal: a plain line every few seconds,
    `train mytask: epoch 3/30 (batch 12/40), 45 s elapsed, ~5 min left` (`liveml.core.progress`),
    instead of tqdm's carriage returns, which a log file shows as one endless line. `silent`:
    no output at all (`LIVEML_PROGRESS=off`)."""

    def __init__(self, label: str, silent: bool = False):
        super().__init__()
        self.label = label
        self.enabled = not silent
        self.progress = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def _unit(self, trainer) -> tuple[str, int | None]:
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            return "epoch", int(trainer.max_epochs)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return "step", int(trainer.max_steps)
        return "epoch", None

    def _report(self, trainer, batches_done: int) -> None:
        if self.progress is None:
            return
        unit, total = self._unit(trainer)
        if unit == "step":
            done = float(trainer.global_step)
            self.progress.update(done, f"step {int(done)}/{total}")
            return
        epoch = int(trainer.current_epoch)
        per_epoch = self.total_train_batches
        finite = isinstance(per_epoch, int) or (isinstance(per_epoch, float) and per_epoch < 1e18)
        frac = min(batches_done / per_epoch, 1.0) if finite and per_epoch else 0.0
        shown = min(epoch + 1, total) if total else epoch + 1
        text = f"epoch {shown}/{total}" if total else f"epoch {shown}"
        if finite and per_epoch and 0 < batches_done < per_epoch:
            text += f" (batch {batches_done}/{int(per_epoch)})"
        self.progress.update(epoch + frac, text)

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        from liveml.core.progress import Progress

        unit, total = self._unit(trainer)
        done = trainer.global_step if unit == "step" else trainer.current_epoch
        self.progress = Progress(self.label, total, item=unit, initial=float(done))
        self._report(trainer, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._report(trainer, batch_idx + 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.progress is not None and self._unit(trainer)[0] == "epoch":
            _, total = self._unit(trainer)
            done = int(trainer.current_epoch) + 1
            self.progress.update(done, f"epoch {done}/{total}" if total else f"epoch {done}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.progress is not None:
            self.progress.close(failed=True)
            self.progress = None


def progress_callbacks(label: str) -> list[Callback]:
    """The progress bar of a training run: none on a terminal (Lightning's own tqdm bar), else
    `LineProgressBar` (plain lines, or nothing with `LIVEML_PROGRESS=off`)."""
    from liveml.core.progress import mode

    shown = mode()
    return [] if shown == "bar" else [LineProgressBar(label, silent=shown == "off")]


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


class BackgroundWandb(Logger):
    """A Lightning logger whose W&B run lives in a process of its own
    (`liveml.tracking.wandb_worker`), started when this is created.

    W&B's Python side (its import, the run's start, each call's serialisation) runs there, on
    another core and outside this interpreter's lock, so the training neither waits for nor
    shares its CPU with it. Calls are sent in order as JSON lines (a writer thread, so a slow
    start never blocks the training); `finish` is sent the same way and `join` waits for it. A
    failure to start W&B is raised in the training at its next logging call (and by `ready`).
    If this process dies, the worker finishes the run as failed.
    """

    def __init__(
        self,
        init: Mapping[str, Any],
        id_file: Path,
        resumed_id: str | None,
        new_id: str,
        save_dir: str,
    ):
        """`init`: wandb.init's arguments but the id; the run resumes `resumed_id` when given
        (falling back to `new_id` when a killed process's W&B service still holds it)."""
        super().__init__()
        import subprocess

        self._planned_id = resumed_id or new_id
        self._save_dir = save_dir
        self._ready = threading.Event()
        self._done = threading.Event()
        self.started: dict | None = None
        self.error: BaseException | None = None
        self._finished = False
        # Seconds W&B took in its process: to start its run, and to finish it.
        self.seconds: dict[str, float | None] = {"start": None, "finish": None}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "liveml.tracking.wandb_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._outbox.put(
            {
                "init": dict(init),
                "id_file": str(id_file),
                "resumed_id": resumed_id,
                "new_id": new_id,
            }
        )
        self._writer = threading.Thread(target=self._write, name="liveml-wandb-out", daemon=True)
        self._reader = threading.Thread(target=self._read, name="liveml-wandb-in", daemon=True)
        self._writer.start()
        self._reader.start()

    # -- Lightning's Logger interface

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str:
        return self._planned_id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        from lightning.fabric.utilities.logger import (
            _convert_json_serializable,
            _convert_params,
            _sanitize_callable_params,
        )

        params = _convert_json_serializable(_sanitize_callable_params(_convert_params(params)))
        self._send({"op": "hparams", "params": params})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._send(
            {
                "op": "metrics",
                "metrics": {k: _number(v) for k, v in metrics.items()},
                "step": step,
            }
        )

    # -- the run

    def _send(self, message: dict) -> None:
        if self.error is not None:
            raise self.error
        self._outbox.put(message)

    def _write(self) -> None:
        pipe = self._proc.stdin
        while True:
            message = self._outbox.get()
            if message is None:
                break
            try:
                pipe.write((json.dumps(message, default=str) + "\n").encode())
                pipe.flush()
            except (BrokenPipeError, OSError):
                break  # the worker is gone: the reader reports it
        with contextlib.suppress(OSError):
            pipe.close()

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            if "started" in message:
                self.started = message["started"]
                self.seconds["start"] = self.started["seconds"]
                self._ready.set()
            elif "error" in message:
                self.error = RuntimeError(message["error"])
                self._ready.set()
            elif "finished" in message:
                self.seconds["finish"] = message["finished"]["seconds"]
        self._proc.wait()
        if not self._ready.is_set():
            self.error = RuntimeError(
                f"the W&B worker exited (code {self._proc.returncode}) before its run started"
            )
            self._ready.set()
        self._done.set()

    def ready(self) -> dict:
        """{"id", "dir"} of the started run (waits for the start); raises what made it fail."""
        self._ready.wait()
        if self.error is not None:
            raise self.error
        return self.started

    def summary(self, values: Mapping[str, Any]) -> None:
        self._send({"op": "summary", "values": dict(values)})

    def finish(self, exit_code: int = 0) -> None:
        """Send the W&B run's finish (once); `join` waits for it."""
        if not self._finished:
            self._finished = True
            self._outbox.put({"op": "finish", "exit_code": exit_code})
            self._outbox.put(None)

    def join(self) -> None:
        self.finish(1)  # no-op after a finish
        self._done.wait()
        self._writer.join()


class Tracking:
    """The loggers of one run and how to close them; `with` closes with exit code 1 on error."""

    def __init__(
        self,
        csv_logger: MetricsCSVLogger,
        wandb: BackgroundWandb | None = None,
        mode: str = "disabled",
        label: str = "train",
    ):
        self.csv = csv_logger
        self.label = label
        self.wandb = wandb
        self.mode = mode
        self.closed = False

    @property
    def loggers(self) -> list:
        return [lg for lg in (self.wandb, self.csv) if lg is not None]

    @property
    def callbacks(self) -> list[Callback]:
        """Callbacks the trainer needs for these loggers (the CSV's epoch-boundary writes) and
        the run's progress report (`progress_callbacks`)."""
        return [FlushMetricsCSV(self.csv), *progress_callbacks(self.label)]

    def planned(self) -> dict:
        """What the record keeps about the W&B run, without waiting for it: the id it is
        started with (a resume that finds it held falls back to a new one) and the mode."""
        planned = None if self.wandb is None else self.wandb.version
        return {"id": planned, "mode": self.mode, "dir": None}

    def info(self) -> dict:
        """What the run record keeps about the W&B run: id, mode, local folder (waits for the
        start; raises what made it fail)."""
        if self.wandb is None:
            return {"id": None, "mode": self.mode, "dir": None}
        run = self.wandb.ready()
        return {"id": run["id"], "mode": self.mode, "dir": run["dir"]}

    def summary(self, **values: Any) -> None:
        if self.wandb is not None:
            self.wandb.summary(values)

    def finish(self, exit_code: int = 0) -> None:
        """Write the CSV and queue the W&B run's finish, without waiting for it (`close` does)."""
        self.csv.write()
        if self.wandb is not None:
            self.wandb.finish(exit_code)

    def close(self, exit_code: int = 0) -> None:
        """Write the CSV, finish the W&B run and wait for it (idempotent). A W&B failure is
        raised after a successful run, and only reported after a failed one."""
        if self.closed:
            return
        self.closed = True
        self.finish(exit_code)
        if self.wandb is None:
            return
        self.wandb.join()
        if self.wandb.error is not None:
            if exit_code == 0:
                raise self.wandb.error
            print(f"liveml: W&B: {self.wandb.error}", file=sys.stderr, flush=True)

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
    resumed, so a killed-and-resumed training is one W&B run. W&B runs in a process of its own
    (see BackgroundWandb); `Tracking.info()` waits for its start.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_logger = MetricsCSVLogger(run_dir / METRICS_CSV, resume=resume)
    if not resume:
        csv_logger.write()  # start a fresh, empty log (drops a stale one)
    label = f"train {cfg.task.name}"
    if is_mlflow(cfg):  # logger=mlflow: an MLflow run instead of W&B (see open_mlflow)
        return open_mlflow(cfg, record, run_dir, csv_logger, label, project=project, resume=resume)
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return Tracking(csv_logger, None, mode, label)

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
    init = {
        "name": record.get("run_id"),
        "project": cfg.logger.project,
        "entity": cfg.logger.entity,
        "dir": str(wandb_dir),
        "group": sweep.get("name"),
        "job_type": "train",
        "tags": [
            str(record.get("task")),
            *([sweep["kind"]] if sweep.get("kind") else []),
        ],
        "config": config,
        "mode": mode,
    }
    wandb = BackgroundWandb(init, id_file, resumed_id, _new_wandb_id(), str(wandb_dir))
    return Tracking(csv_logger, wandb, mode, label)


# --- logger=mlflow: an MLflow run instead of W&B -------------------------------------------

MLFLOW_ID_FILE = "mlflow_id"


def is_mlflow(cfg) -> bool:
    """True when `logger.dir` is an MLflow tracking URI (`scheme://...`, e.g. conf/logger/
    mlflow.yaml's `sqlite:///mlflow/mlflow.db`): the run goes to MLflow; a folder is W&B's."""
    return "://" in str(cfg.logger.dir)


def mlflow_tracking_uri(cfg, project: Project) -> str:
    """`logger.dir`; a relative SQLite path (`sqlite:///mlflow/mlflow.db`) is under the
    project's home (its folder is created). MLFLOW_TRACKING_URI is not read: MLflow sets it
    itself in every process that chose a store, so another run's choice would leak in; pass
    it as `logger.dir=$MLFLOW_TRACKING_URI`."""
    uri = str(cfg.logger.dir)
    if uri.startswith("sqlite:///"):
        path = project.home_path(uri[len("sqlite:///") :])  # `sqlite:////abs` stays absolute
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri


def mlflow_tags(record: Mapping) -> dict[str, str]:
    """The run record's lineage as MLflow tags (`liveml.*`), plus MLflow's own git commit tag,
    which `mlflow ui` shows in its run table (the run's name, the liveml run id, is set apart)."""
    code = record.get("code") or {}
    sweep = record.get("sweep") or {}
    parts = record.get("fingerprint_parts") or {}
    tags: dict[str, Any] = {
        "mlflow.source.git.commit": code.get("commit"),
        "liveml.run_id": record.get("run_id"),
        "liveml.task": record.get("task"),
        "liveml.created": record.get("created"),
        "liveml.fingerprint": record.get("fingerprint"),
        **{f"liveml.fingerprint.{k}": v for k, v in parts.items()},
        "liveml.commit": code.get("commit"),
        "liveml.dirty": code.get("dirty"),
        "liveml.diff_sha256": code.get("diff_sha256"),
        **{f"liveml.data.{path}": h for path, h in (record.get("data") or {}).items()},
    }
    if isinstance(sweep, Mapping):
        for key in ("name", "kind", "job", "experiment"):
            tags["liveml.sweep" + ("" if key == "name" else f".{key}")] = sweep.get(key)
    return {k: _tag_value(v) for k, v in tags.items() if v is not None}


def mlflow_params(config: Mapping) -> dict[str, str]:
    """The resolved config flattened to MLflow params, keyed as `liveml compare` keys them
    (`model.lr`); values as in config.yaml's JSON form (lists `[8, 16]`, `null`, `true`)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = _tag_value(node)

    walk(config, "")
    return out


def _tag_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _mlflow_logger_class():
    from lightning.pytorch.loggers import MLFlowLogger

    class MLflowRunLogger(MLFlowLogger):
        """Lightning's MLFlowLogger; the run's params are the resolved config, logged once at
        the start (`open_mlflow`), so the module's own hyperparameters are not logged again."""

        @rank_zero_only
        def log_hyperparams(self, params, *args, **kwargs) -> None:
            """The params are logged at the start (see the class)."""

    return MLflowRunLogger


class MLflowTracking(Tracking):
    """The loggers of a run tracked in MLflow (`logger=mlflow`): Lightning's MLFlowLogger plus
    the CSV log. Lightning ends the MLflow run when the fit ends (FINISHED, or FAILED on an
    error); `finish`/`close` end it when the fit did not, and add the final summary as tags.
    MLflow calls are synchronous (each logging call is one write to its store)."""

    def __init__(self, csv_logger: MetricsCSVLogger, mlflow_logger, label: str):
        super().__init__(csv_logger, None, "disabled", label)  # no W&B run
        self.mlflow = mlflow_logger

    @property
    def loggers(self) -> list:
        return [self.mlflow, self.csv]

    def summary(self, **values: Any) -> None:
        from mlflow.entities import RunTag

        tags = [
            RunTag(f"liveml.{k.removeprefix('liveml_')}", _tag_value(v)) for k, v in values.items()
        ]
        self.mlflow.experiment.log_batch(self.mlflow.run_id, tags=tags)

    def finish(self, exit_code: int = 0) -> None:
        """Write the CSV; end the MLflow run if still running (FAILED when `exit_code`, also
        after a fit that ended well). An MLflow failure after a failed run is only reported."""
        self.csv.write()
        try:
            client, run_id = self.mlflow.experiment, self.mlflow.run_id
            if exit_code or client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "FAILED" if exit_code else "FINISHED")
        except Exception as e:
            if exit_code == 0:
                raise
            print(f"liveml: MLflow: {e}", file=sys.stderr, flush=True)


def open_mlflow(
    cfg,
    record: dict,
    run_dir: str | os.PathLike,
    csv_logger: MetricsCSVLogger,
    label: str,
    *,
    project: Project | None = None,
    resume: bool = False,
) -> Tracking:
    """Start the MLflow run of one training (`logger=mlflow`) and note it in `record["mlflow"]`
    (run id, experiment, tracking and artifact URIs).

    The run is named by the liveml run id, in the experiment `logger.project` of the store
    `logger.dir` (see `mlflow_tracking_uri`; a SQLite store keeps artifacts in `artifacts/`
    beside its file); its tags hold the lineage (`mlflow_tags`), its params the resolved config
    (`mlflow_params`). With `resume`, the MLflow run of the killed process (its id in
    `run_dir/mlflow_id`) continues. `logger.mode: disabled` starts no MLflow run.
    """
    if cfg.logger.mode == "disabled":
        record["mlflow"] = None
        return Tracking(csv_logger, None, "disabled", label)
    from mlflow.entities import Param, RunTag
    from mlflow.exceptions import MlflowException

    from liveml.core.config import to_dict

    project = project or Project.find()
    uri = mlflow_tracking_uri(cfg, project)
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    id_file = Path(run_dir) / MLFLOW_ID_FILE
    resumed = id_file.read_text().strip() if resume and id_file.is_file() else None
    tags = mlflow_tags(record)

    def logger(run_id: str | None):
        return _mlflow_logger_class()(
            experiment_name=cfg.logger.project,
            run_name=record.get("run_id"),
            tracking_uri=uri,
            tags=dict(tags),
            artifact_location=artifacts,
            run_id=run_id,
        )

    mlf = logger(resumed)
    try:
        run_id = mlf.run_id
    except MlflowException:  # the resumed run is not in this store (any more): a new run
        mlf = logger(None)
        run_id = mlf.run_id
    client = mlf.experiment
    run = client.get_run(run_id)
    if resumed == run_id:
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    # Params are write-once in MLflow: a resumed run only gets those it lacks.
    config = to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    limit = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
    params = [
        Param(k, v[:limit]) for k, v in mlflow_params(config).items() if k not in run.data.params
    ]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[i : i + 100])
    atomic_write_text(id_file, run_id)
    record["mlflow"] = {
        "run_id": run_id,
        "experiment": cfg.logger.project,
        "experiment_id": mlf.experiment_id,
        "tracking_uri": uri,
        "artifact_uri": run.info.artifact_uri,
    }
    return MLflowTracking(csv_logger, mlf, label)
