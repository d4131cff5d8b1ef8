"""The Sweeper class Hydra instantiates; the search itself lives in `_core` (imports Optuna)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import Direction


class LivemlOptunaSweeper(Sweeper):
    """Asks Optuna for trials, launches them as Hydra jobs, tells Optuna their run metrics."""

    def __init__(
        self,
        study_name: str | None,
        storage: str | None,
        direction: Direction,
        metric: str | None,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.direction = direction
        self.metric = metric
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.pruner = pruner
        self.params = params
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from ._core import run_sweep

        return run_sweep(self, arguments)
