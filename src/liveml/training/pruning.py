"""Optuna pruning inside a training job started by liveml's Optuna sweeper.

The sweeper (`hydra_plugins.liveml_optuna_sweeper`) names a job's trial in environment variables;
`callbacks_from_env` turns them into a Lightning callback that reports the monitored metric after
every validation and stops a trial the study's pruner rejects. The stop is a normal end of fit
(`run_status = "pruned"`), so the shorter run is still saved and the sweeper tells Optuna PRUNED.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

ENV_STORAGE = "LIVEML_OPTUNA_STORAGE"  # storage URL, e.g. sqlite:////abs/sweep/study.db
ENV_STUDY = "LIVEML_OPTUNA_STUDY"  # study name
ENV_TRIAL = "LIVEML_OPTUNA_TRIAL"  # trial number within the study
ENV_MONITOR = "LIVEML_OPTUNA_MONITOR"  # metric to report, e.g. val/map_50
ENV_VARS = (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_MONITOR)

# The pruner is not stored by Optuna; the sweeper keeps its settings in this study user attr so
# each job prunes with the pruner the sweep was configured with.
PRUNER_ATTR = "liveml_pruner"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage for `url`; SQLite waits up to a minute for a lock (parallel jobs write)."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def pruner_spec(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The plain settings of a MedianPruner (None: no pruning), as kept in PRUNER_ATTR."""
    if cfg is None:
        return None
    return {
        "type": "median",
        "n_startup_trials": int(cfg.get("n_startup_trials", 5)),
        "n_warmup_steps": int(cfg.get("n_warmup_steps", 0)),
        "interval_steps": int(cfg.get("interval_steps", 1)),
    }


def make_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """The pruner of a PRUNER_ATTR value (None: a pruner that never prunes)."""
    if spec is None:
        return optuna.pruners.NopPruner()
    if spec.get("type") != "median":
        raise ValueError(f"unknown pruner {spec.get('type')!r} in study attr {PRUNER_ATTR}")
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec["n_startup_trials"],
        n_warmup_steps=spec["n_warmup_steps"],
        interval_steps=spec["interval_steps"],
    )


def callbacks_from_env(environ: Mapping[str, str] | None = None) -> list[Callback]:
    """The pruning callback of the trial this job runs for; [] outside an Optuna sweep."""
    env = os.environ if environ is None else environ
    present = [v for v in ENV_VARS if env.get(v)]
    if not present:
        return []
    missing = [v for v in ENV_VARS if not env.get(v)]
    if missing:
        raise RuntimeError(
            f"Optuna trial environment is incomplete: {', '.join(present)} set but "
            f"{', '.join(missing)} missing. Set all of {', '.join(ENV_VARS)} or none."
        )
    storage = open_storage(env[ENV_STORAGE])
    name, number = env[ENV_STUDY], int(env[ENV_TRIAL])
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(name), number
    )
    # The job never samples: a random sampler keeps TPE's bookkeeping out of Trial().
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    study.pruner = make_pruner(study.user_attrs.get(PRUNER_ATTR))
    state = storage.get_trial(trial_id).state
    if state != optuna.trial.TrialState.RUNNING:
        # Reporting to a finished trial would fail the run; train it without pruning instead.
        _log(f"Optuna trial {number} of study {name!r} is {state.name}, not RUNNING: no pruning")
        return []
    callback = _pruning_class()(optuna.trial.Trial(study, trial_id), monitor=env[ENV_MONITOR])
    return [callback]


def __getattr__(name: str) -> Any:
    # `pruning.OptunaPruning` without importing Lightning up front: the sweeper process
    # uses this module too, and Lightning takes seconds to import.
    if name == "OptunaPruning":
        return _pruning_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _pruning_class() -> type:
    from optuna_integration import PyTorchLightningPruningCallback
    from optuna_integration.pytorch_lightning.pytorch_lightning import _PRUNED_KEY

    class OptunaPruning(PyTorchLightningPruningCallback):
        """Reports `monitor` to the trial after each validation; a pruned trial stops fitting.

        Unlike its base class it never raises out of fit: it sets `trainer.should_stop` and
        `run_status = "pruned"` (on every rank under DDP), so the run ends and is saved as usual.
        """

        def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
            super().__init__(trial, monitor)
            self.run_status: str | None = None
            self._broken = False

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or self._broken or self.run_status is not None:
                return
            if self.is_ddp_backend:
                self._ddp_validation_end(trainer, pl_module)
                return
            try:
                super().on_validation_end(trainer, pl_module)
            except optuna.TrialPruned as e:
                trainer.should_stop = True
                self.run_status = "pruned"
                _log(f"Optuna trial {self._trial.number}: {e}")
            except Exception as e:
                # Pruning only saves time: a storage failure must not cost the training run.
                self._broken = True
                warnings.warn(
                    f"Optuna pruning disabled for trial {self._trial.number} after an error "
                    f"reporting {self.monitor!r}: {type(e).__name__}: {e}",
                    stacklevel=1,
                )

        def _ddp_validation_end(self, trainer, pl_module) -> None:
            super().on_validation_end(trainer, pl_module)  # broadcasts rank 0's verdict
            if trainer.callback_metrics.get(self.monitor) is None:
                return  # the base class warned and broadcast nothing
            # Only rank 0 knows whether the stop was its pruning (another callback may also stop):
            # it wrote the verdict before returning, so it reads it back and tells every rank.
            pruned = False
            if trainer.is_global_zero and trainer.should_stop:
                attrs = self._trial.storage.get_trial_system_attrs(self._trial._trial_id)
                pruned = bool(attrs.get(_PRUNED_KEY))
            if trainer.strategy.broadcast(pruned):
                self.run_status = "pruned"

    OptunaPruning.__qualname__ = "OptunaPruning"  # pickles by name, via __getattr__ above
    return OptunaPruning


def _log(msg: str) -> None:
    print(f"liveml: {msg}", file=sys.stderr, flush=True)
