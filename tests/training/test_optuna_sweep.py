"""Bayesian search through Hydra (`-m hparams_search=defects_optuna`): liveml's Optuna sweeper
plugin and the job-side pruning callback, with real Hydra, Optuna (SQLite) and Lightning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.liveml_optuna_sweeper._core import SweepError, parse_search_space
from liveml.training import pruning

SWEEP = Path("sweeps/optuna/defects_optuna")  # the stable sweep dir of defects_optuna.yaml
STUDY = "defects_optuna"
# The search space of conf/hparams_search/defects_optuna.yaml, as Optuna distributions.
SPACE = {
    "model.lr": FloatDistribution(1e-3, 1e-2, log=True),
    "model.weight_decay": FloatDistribution(1e-5, 1e-3, log=True),
    "model.batch_size": CategoricalDistribution([8, 16]),
}


def _command(overrides: list[str], *extra: str, search: str = STUDY) -> list[str]:
    """`python -m liveml.training -m hparams_search=defects_optuna ...`, one job at a time (basic
    launcher: no worker pool to start on a busy machine)."""
    # The TINY batch size would fix a searched key (the command line wins over params).
    tiny = [o for o in overrides if not o.startswith("model.batch_size=")]
    return [
        *(sys.executable, "-m", "liveml.training", "-m", f"hparams_search={search}"),
        *tiny,
        "hydra/launcher=basic",
        *extra,
    ]


def _env(root: Path) -> dict[str, str]:
    # Separate processes, as in real use: not attached to this process's W&B service.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "WANDB_SERVICE" and not k.startswith("LIVEML_OPTUNA_")
    }
    env.update(LIVEML_ROOT=str(root), WANDB_MODE="offline")
    return env


def _sweep(
    root: Path, overrides: list[str], *extra: str, search: str = STUDY, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a search in the project at `root`."""
    proc = subprocess.run(
        _command(overrides, *extra, search=search),
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _study(root: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root / SWEEP / 'study.db'}")


def _record(root: Path, number: int) -> dict:
    return json.loads((root / SWEEP / str(number) / "model" / "run.json").read_text())


def _job_dirs(root: Path) -> set[str]:
    return {p.name for p in (root / SWEEP).iterdir() if p.is_dir()}


@pytest.mark.slow
def test_a_search_completes_and_names_the_best_trial(tiny_trainable, tiny_overrides):
    root = tiny_trainable.root
    _sweep(root, tiny_overrides, "hydra.sweeper.n_trials=3")

    trials = _study(root).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert _job_dirs(root) == {"0", "1", "2"}  # job folders are named by trial number
    for t in trials:
        record = _record(root, t.number)
        assert record["status"] == "finished"
        assert t.value == record["metrics"]["val/map_50"]
        assert t.user_attrs["run_id"] == record["run_id"]
        assert record["config"]["model"]["lr"] == t.params["model.lr"]
        assert record["config"]["model"]["batch_size"] == t.params["model.batch_size"]
        assert set(t.intermediate_values) == {0, 1}  # the job reported each epoch
    assert len({t.params["model.lr"] for t in trials}) == 3

    best = _study(root).best_trial
    results = yaml.safe_load((root / SWEEP / "optimization_results.yaml").read_text())
    assert results["best_trial"] == best.number
    assert results["best_value"] == best.value
    assert results["best_params"] == best.params
    assert results["best_output_dir"] == str(root / SWEEP / str(best.number))
    assert (results["n_complete"], results["n_pruned"], results["n_failed"]) == (3, 0, 0)


@pytest.mark.slow  # 37 s; a 3-trial search and pruning stay in the default suite
def test_rerun_finishes_the_search_and_reruns_an_interrupted_trial(tiny_trainable, tiny_overrides):
    root = tiny_trainable.root
    _sweep(root, tiny_overrides, "hydra.sweeper.n_trials=2")
    study = _study(root)
    # What a killed sweep leaves behind: a trial RUNNING with its params asked.
    interrupted = study.ask(SPACE)
    assert interrupted.number == 2

    _sweep(root, tiny_overrides, "hydra.sweeper.n_trials=3")
    trials = _study(root).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,  # the interrupted one ...
        TrialState.COMPLETE,  # ... run again first, as the one new trial
    ]
    rerun = trials[3]
    assert rerun.params == interrupted.params
    assert rerun.user_attrs["liveml_rerun_of"] == 2
    assert _record(root, 3)["config"]["model"]["lr"] == interrupted.params["model.lr"]
    assert _job_dirs(root) == {"0", "1", "3"}

    # The search is done: the same command again runs nothing.
    _sweep(root, tiny_overrides, "hydra.sweeper.n_trials=3")
    assert len(_study(root).trials) == 4
    assert _job_dirs(root) == {"0", "1", "3"}


@pytest.mark.slow  # 13 s; the callback test covers pruning by default
def test_a_trial_worse_than_the_median_is_pruned_end_to_end(tiny_trainable, tiny_overrides):
    root = tiny_trainable.root
    (root / SWEEP).mkdir(parents=True)
    study = optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{root / SWEEP / 'study.db'}", direction="maximize"
    )
    # Two perfect trials: the pruner's 2 startup trials, a median no tiny run can reach.
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(value=1.0, intermediate_values={e: 1.0 for e in range(3)})
        )

    _sweep(root, tiny_overrides, "hydra.sweeper.n_trials=3", "trainer.max_epochs=3")
    trial = _study(root).trials[2]
    assert trial.state == TrialState.PRUNED
    record = _record(root, 2)  # a pruned run is still saved, just shorter
    assert record["status"] == "pruned"
    assert record["epochs"] == 2  # stopped after epoch 1 (n_warmup_steps=1), not 3
    assert set(trial.intermediate_values) == {0, 1}
    results = yaml.safe_load((root / SWEEP / "optimization_results.yaml").read_text())
    assert (results["n_complete"], results["n_pruned"]) == (2, 1)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("model.nope: interval(1, 2)", "hydra.sweeper.params.model.nope: the searched key"),
        ("model.lr: interval(1e-3,", "hydra.sweeper.params.model.lr: cannot parse"),
    ],
)
def test_a_bad_search_space_fails_naming_the_key(tiny_project, tiny_overrides, param, message):
    root = tiny_project.root
    (root / "conf" / "hparams_search" / "broken.yaml").write_text(
        "# @package _global_\ndefaults:\n  - defects_optuna\n"
        f"hydra:\n  sweeper:\n    params:\n      {param}\n"
    )
    proc = _sweep(root, tiny_overrides, search="broken", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert not (root / SWEEP / "study.db").exists()  # checked before the study is touched


def test_search_space_maps_to_optuna_distributions():
    fixed, dims = parse_search_space(
        {
            "model.lr": "tag(log, interval(1e-3, 1e-2))",
            "model.dropout": "interval(0, 0.5)",
            "model.batch_size": "choice(8, 16)",
            "model.rnn_layers": "range(1, 4)",
            "model.head_convs": "int(interval(1, 3))",
            "model.name": "fcos_tiny",
        },
        ["seed=0,1", "model.name='crnn ctc'"],  # the command line wins over params
        OverridesParser.create(),
    )
    assert fixed == ["model.name='crnn ctc'"]
    dist = {k: d.distribution for k, d in dims.items()}
    assert dist == {
        "model.lr": FloatDistribution(1e-3, 1e-2, log=True),
        "model.dropout": FloatDistribution(0.0, 0.5),
        "model.batch_size": CategoricalDistribution([8, 16]),
        "model.rnn_layers": IntDistribution(1, 3),
        "model.head_convs": IntDistribution(1, 3),
        "seed": CategoricalDistribution([0, 1]),
    }
    assert dims["model.batch_size"].override(16) == "model.batch_size=16"
    assert dims["model.lr"].override(0.004) == "model.lr=0.004"
    with pytest.raises(SweepError, match=r"model.lr: a log interval needs a positive start"):
        parse_search_space({"model.lr": "tag(log, interval(0, 1))"}, [], OverridesParser.create())


# --- the job side: the pruning callback, on a small Lightning module and a real SQLite study ---


class _Scored(L.LightningModule):
    """Trains a little; validates to a fixed `val/score`."""

    def __init__(self, score: float):
        super().__init__()
        self.score = score
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(score: float, callbacks: list) -> L.Trainer:
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(_Scored(score), train_dataloaders=data, val_dataloaders=data)
    return trainer


def test_pruning_callback_stops_a_bad_trial_without_raising(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(
        pruning.PRUNER_ATTR, pruning.pruner_spec({"n_startup_trials": 1, "n_warmup_steps": 1})
    )
    assert pruning.callbacks_from_env({}) == []  # a normal run: no sweep, no callback

    def trial_env(number: int) -> None:
        monkeypatch.setenv(pruning.ENV_STORAGE, storage)
        monkeypatch.setenv(pruning.ENV_STUDY, "s")
        monkeypatch.setenv(pruning.ENV_TRIAL, str(number))
        monkeypatch.setenv(pruning.ENV_MONITOR, "val/score")

    good = study.ask()
    trial_env(good.number)
    (callback,) = pruning.callbacks_from_env()
    trainer = _fit(1.0, [callback])
    assert callback.run_status is None
    assert trainer.current_epoch == 4  # all epochs
    study.tell(good, 1.0)

    bad = study.ask()
    trial_env(bad.number)
    (callback,) = pruning.callbacks_from_env()
    trainer = _fit(0.5, [callback])  # worse than the median: pruned, and no exception
    assert callback.run_status == "pruned"
    assert trainer.current_epoch == 2  # stopped after epoch 1, the first one past warm-up
    assert trainer.state.status == "finished"
    frozen = study.tell(bad, state=TrialState.PRUNED)
    assert frozen.intermediate_values == {0: 0.5, 1: 0.5}

    monkeypatch.delenv(pruning.ENV_MONITOR)
    with pytest.raises(RuntimeError, match=pruning.ENV_MONITOR):
        pruning.callbacks_from_env()  # a half-set environment is a bug, not a normal run


@pytest.mark.slow
def test_a_killed_search_resumes_its_interrupted_trial_from_its_checkpoint(
    tiny_trainable, tiny_cfg, tiny_overrides
):
    root = tiny_trainable.root
    ckpts = tiny_trainable.path(tiny_cfg().paths.checkpoints)
    args = ("hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "trainer.max_epochs=8")
    killed = subprocess.Popen(
        _command(tiny_overrides, *args),
        cwd=root,
        env=_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # kill the whole sweep once trial 1 has checkpointed an epoch
        deadline = time.monotonic() + 300
        while not ((root / SWEEP / "1").is_dir() and list(ckpts.glob("*/epoch001.ckpt"))):
            assert killed.poll() is None, "the sweep ended before trial 1 checkpointed"
            assert time.monotonic() < deadline, "trial 1 made no checkpoint within 300 s"
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert [t.state for t in _study(root).trials] == [TrialState.COMPLETE, TrialState.RUNNING]

    proc = _sweep(root, tiny_overrides, *args)
    assert "liveml: resuming run" in proc.stderr
    trials = _study(root).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    assert trials[2].params == trials[1].params
    assert _record(root, 2)["resumed_from"]["epochs_done"] >= 2  # not trained from scratch
    assert _record(root, 2)["epochs"] == 8


_DDP_FIT = """
import sys
import lightning as L
import torch
from liveml.training import pruning


class Scored(L.LightningModule):
    def __init__(self, score):
        super().__init__()
        self.score = score
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.score, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
callbacks = pruning.callbacks_from_env()
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=4, logger=False,
    enable_checkpointing=False, enable_progress_bar=False, callbacks=callbacks,
)
trainer.fit(Scored(float(sys.argv[1])), train_dataloaders=data, val_dataloaders=data)
print(f"rank {trainer.global_rank}: {callbacks[0].run_status} after {trainer.current_epoch}")
"""


@pytest.mark.slow
def test_pruning_under_ddp_stops_every_rank(tmp_path):
    (tmp_path / "fit.py").write_text(_DDP_FIT)  # Lightning's DDP re-runs the script per rank
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(
        pruning.PRUNER_ATTR, pruning.pruner_spec({"n_startup_trials": 1, "n_warmup_steps": 1})
    )
    for score, expected in ((1.0, "None after 4"), (0.5, "pruned after 2")):
        trial = study.ask()
        env = dict(os.environ, WANDB_MODE="offline")
        env.update(
            {
                pruning.ENV_STORAGE: storage,
                pruning.ENV_STUDY: "s",
                pruning.ENV_TRIAL: str(trial.number),
                pruning.ENV_MONITOR: "val/score",
            }
        )
        proc = subprocess.run(
            [sys.executable, "fit.py", str(score)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"rank 0: {expected}" in proc.stdout
        assert f"rank 1: {expected}" in proc.stdout
        study.tell(trial, score) if score == 1.0 else study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[1].intermediate_values == {0: 0.5, 1: 0.5}
