"""Structured config of the sweeper, registered as `hydra/sweeper: liveml_optuna`."""

# ruff: noqa: UP006, UP035, UP045 -- OmegaConf reads these annotations at runtime; typing's
# Optional/Dict work on every OmegaConf 2.3 (pyproject allows >=2.3), `X | None` may not.

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    minimize = 1
    maximize = 2


@dataclass
class TPESamplerConf:
    seed: Optional[int] = None
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    multivariate: bool = False
    constant_liar: bool = True  # parallel trials do not all land on the same point


@dataclass
class MedianPrunerConf:
    n_startup_trials: int = 5  # completed trials before anything is pruned
    n_warmup_steps: int = 0  # epochs of each trial that are never pruned
    interval_steps: int = 1


@dataclass
class LivemlOptunaSweeperConf:
    _target_: str = "hydra_plugins.liveml_optuna_sweeper.optuna_sweeper.LivemlOptunaSweeper"
    # Default: the sweep folder's name.
    study_name: Optional[str] = None
    # Default: sqlite:///<hydra.sweep.dir>/study.db (a stable sweep dir makes a re-run resume).
    storage: Optional[str] = None
    direction: Direction = Direction.minimize
    # Key of the job's run record `metrics` to optimize; also the pruning monitor.
    metric: Optional[str] = None
    # COMPLETE + PRUNED trials wanted in the study, counting those of earlier (interrupted)
    # sweeps; a failed trial does not count (a sweep stops once n_trials of its trials fail).
    n_trials: int = 20
    # Trials asked and launched together (the launcher may run them in parallel).
    n_jobs: int = 1
    sampler: TPESamplerConf = field(default_factory=TPESamplerConf)
    # null: no pruning.
    pruner: Optional[MedianPrunerConf] = field(default_factory=MedianPrunerConf)
    # key: value in Hydra's override grammar. Searched: choice(a, b) / a,b (categorical),
    # range(a, b[, step]) (ints, b excluded as in Hydra), interval(a, b) (floats),
    # int(interval(a, b)), tag(log, interval(a, b)) (log scale). Plain values are fixed overrides
    # of every job. Sweeps given on the command line are searched too, and win over params.
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="liveml_optuna", node=LivemlOptunaSweeperConf, provider="liveml"
)
