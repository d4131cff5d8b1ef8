"""liveml's Hydra sweeper: Bayesian search (Optuna TPE) with pruning and resumable studies.

`python -m liveml.training -m hparams_search=defects_optuna` selects it (`hydra/sweeper:
liveml_optuna`). Why not the released hydra-optuna-sweeper: its latest release (1.3.0) pins
optuna<3 (2.10, from 2021) and gives a job no handle on its trial, so Lightning cannot report to
it, bad trials cannot be pruned, and an interrupted search cannot resume its RUNNING trials. This
small plugin drives current Optuna through its ask/tell API instead, and tells each job its trial
through `hydra.job.env_set` (read back by `liveml.training.pruning.callbacks_from_env`).

Modules named with a leading underscore are skipped by Hydra's plugin scan, so Optuna is only
imported when a sweep runs, not by every Hydra app start.
"""
