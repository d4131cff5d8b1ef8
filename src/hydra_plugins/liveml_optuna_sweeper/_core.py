"""The search: a resumable Optuna study, asked and told around Hydra launches."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.core.utils import JobReturn, configure_log
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from liveml.core.atomic import atomic_write_text
from liveml.training.pruning import (
    ENV_MONITOR,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL,
    PRUNER_ATTR,
    open_storage,
    pruner_spec,
)

log = logging.getLogger(__name__)

RESULTS = "optimization_results.yaml"
LOCK = ".sweep.lock"
RERUN_ATTR = "liveml_rerun_of"  # user attr of the trial that re-runs an interrupted one


class SweepError(CompactHydraException):
    """The sweep's settings or search space are wrong, or its first trials all failed."""


@dataclass
class Dimension:
    """One searched key: its Optuna distribution and how a sampled value is written back."""

    key: str
    distribution: BaseDistribution
    texts: dict[Any, str] | None = None  # categorical: choice -> override text as given
    source: str = ""  # where it was given, for error messages

    def override(self, value: Any) -> str:
        text = self.texts[value] if self.texts is not None else Transformer.str(value)
        return f"{self.key}={text}"


def run_sweep(sweeper, arguments: Sequence[str]) -> list[Sequence[JobReturn]]:
    """Run trials until the study holds `n_trials` finished ones; return the job returns."""
    cfg = sweeper.config
    metric, n_trials, n_jobs = sweeper.metric, int(sweeper.n_trials), int(sweeper.n_jobs)
    if not metric:
        raise SweepError(
            "hydra.sweeper.metric is not set: name the run-record metric to optimize "
            "(e.g. val/map_50)."
        )
    if n_trials < 1 or n_jobs < 1:
        raise SweepError(
            f"hydra.sweeper.n_trials ({n_trials}) and n_jobs ({n_jobs}) must be at least 1."
        )
    direction = getattr(sweeper.direction, "name", str(sweeper.direction))

    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    fixed, dims = parse_search_space(sweeper.params or {}, arguments, parser)
    _check_space_composes(sweeper, fixed, dims)

    sweep_dir = Path(str(cfg.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = _storage_url(sweeper.storage, sweep_dir)
    study_name = sweeper.study_name or sweep_dir.name
    with _exclusive(sweep_dir / LOCK):
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            storage=open_storage(url),
            study_name=study_name,
            direction=direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != direction:
            raise SweepError(
                f"study {study_name!r} in {url} was created to {study.direction.name.lower()}, "
                f"but hydra.sweeper.direction is {direction}: use another study_name or storage."
            )
        study.set_user_attr(PRUNER_ATTR, pruner_spec(sweeper.pruner))
        _requeue_interrupted(study, dims)
        s = sweeper.sampler
        # Offset by the trials so far: a resumed sweep must not replay the same random startup
        # points, and a sweep re-run over the same history still samples the same ones.
        seed = None if s.seed is None else int(s.seed) + len(study.trials)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=int(s.n_startup_trials),
            multivariate=bool(s.multivariate),
            constant_liar=bool(s.constant_liar),
        )
        done = _n_done(study)
        if done:
            log.info(f"Study {study_name!r} ({url}) has {done} finished trial(s) of {n_trials}")
        env = {ENV_STORAGE: url, ENV_STUDY: study_name, ENV_MONITOR: metric}
        try:
            returns = _search(sweeper, study, fixed, dims, env, n_trials, n_jobs)
        except BaseException:
            with contextlib.suppress(Exception):  # the results so far; the error is the news
                _report(study, sweep_dir, url, metric, direction, dims)
            raise
        _report(study, sweep_dir, url, metric, direction, dims)
    return returns


def _search(
    sweeper,
    study: optuna.Study,
    fixed: list[str],
    dims: dict[str, Dimension],
    env: dict[str, str],
    n_trials: int,
    n_jobs: int,
) -> list[Sequence[JobReturn]]:
    """Ask, launch and tell batches of up to n_jobs trials until n_trials are done."""
    returns: list[Sequence[JobReturn]] = []
    errors: list[str] = []  # why trials of this sweep failed
    first_batch = True
    while (left := n_trials - _n_done(study)) > 0:
        trials = [study.ask(_distributions(dims)) for _ in range(min(n_jobs, left))]
        jobs = [
            [
                *fixed,
                *(dims[k].override(v) for k, v in t.params.items() if k in dims),
                *_env_overrides({**env, ENV_TRIAL: str(t.number)}),
            ]
            for t in trials
        ]
        results = _launch(sweeper, trials, jobs)
        returns.append(results)
        failed = [
            _tell(study, t, r, env[ENV_MONITOR]) for t, r in zip(trials, results, strict=True)
        ]
        errors += [e for e in failed if e]
        # Failed trials do not count toward n_trials (fix the cause, re-run, get them all), so
        # stop before a systematic failure spends the budget over and over.
        if first_batch and all(failed):
            raise SweepError(
                f"all {len(trials)} trial(s) of the first batch failed; stopping instead of "
                f"spending the rest of the budget. First error: {errors[0]}"
            )
        if len(errors) >= n_trials:
            raise SweepError(
                f"{len(errors)} trials of this sweep failed (as many as n_trials); stopping. "
                f"First error: {errors[0]}"
            )
        first_batch = False
    return returns


def parse_search_space(
    params: Mapping[str, Any], arguments: Sequence[str], parser: OverridesParser
) -> tuple[list[str], dict[str, Dimension]]:
    """(fixed overrides, searched dimensions) from hydra.sweeper.params and the command line.

    The command line comes last, so it overrides params of the same key (as in the released
    sweeper): `python -m liveml.training -m hparams_search=... model.lr=0.003` fixes the lr.
    """
    lines = []
    for key, value in params.items():
        if OmegaConf.is_config(value):
            value = OmegaConf.to_object(value)
        text = value if isinstance(value, str) else Transformer.str(value)
        lines.append((f"hydra.sweeper.params.{key}", f"{key}={text}"))
    lines += [(f"command-line override {a!r}", a) for a in arguments]

    fixed: dict[str, str] = {}
    dims: dict[str, Dimension] = {}
    for source, line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as e:
            raise SweepError(f"{source}: cannot parse {line!r}: {e}") from None
        key = override.get_key_element()
        fixed.pop(key, None)
        dims.pop(key, None)
        if override.is_sweep_override():
            try:
                dims[key] = _dimension(override)
                dims[key].source = source
            except ValueError as e:
                raise SweepError(f"{source}: {e}") from None
        else:
            fixed[key] = line
    if not dims:
        raise SweepError(
            "nothing to search: give hydra.sweeper.params (or command-line sweeps) such as "
            "model.lr='tag(log, interval(1e-4, 1e-2))' or model.batch_size='choice(8, 16)'."
        )
    return list(fixed.values()), dims


def _dimension(o: Override) -> Dimension:
    key, value = o.get_key_element(), o.value()
    if o.is_choice_sweep():
        # The listed order, never a shuffled one: the seeded sampler must see the same space.
        elements = list(value.list) if isinstance(value, ChoiceSweep) else list(o.sweep_iterator())
        texts: dict[Any, str] = {}
        for el in elements:
            choice = el.text if isinstance(el, QuotedString) else el
            if not isinstance(choice, str | int | float | bool | None):
                choice = Transformer.str(el)  # a list or dict: Optuna stores its text
            texts[choice] = Transformer.str(el)
        return Dimension(key, CategoricalDistribution(list(texts)), texts)
    if o.is_range_sweep():
        assert isinstance(value, RangeSweep)
        values = list(value.range())
        if not values:
            raise ValueError(f"{key}: range({value.start}, {value.stop}, {value.step}) is empty")
        if all(isinstance(v, int) for v in values) and isinstance(value.step, int):
            lo, hi = min(values), max(values)
            return Dimension(key, IntDistribution(lo, hi, step=abs(value.step)))
        texts = {v: Transformer.str(v) for v in values}  # float steps: the listed points
        return Dimension(key, CategoricalDistribution(list(texts)), texts)
    if o.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        unknown = set(value.tags) - {"log"}
        if unknown:
            raise ValueError(f"{key}: unsupported tag(s) {sorted(unknown)}; only 'log' is known")
        log_scale = "log" in value.tags
        lo, hi = value.start, value.end
        if lo is None or hi is None or not lo < hi:
            raise ValueError(f"{key}: interval({lo}, {hi}) needs start < end")
        if log_scale and lo <= 0:
            raise ValueError(f"{key}: a log interval needs a positive start, got {lo}")
        if isinstance(lo, int) and isinstance(hi, int):  # int(interval(a, b))
            return Dimension(key, IntDistribution(lo, hi, log=log_scale))
        return Dimension(key, FloatDistribution(float(lo), float(hi), log=log_scale))
    raise ValueError(f"{key}: unsupported sweep {o.input_line!r}")


def _distributions(dims: Mapping[str, Dimension]) -> dict[str, BaseDistribution]:
    return {k: d.distribution for k, d in dims.items()}


def _check_space_composes(sweeper, fixed: list[str], dims: Mapping[str, Dimension]) -> None:
    """Compose one job of the space before the study is touched; name the key that breaks."""

    def sample(d: Dimension) -> str:
        dist = d.distribution
        if isinstance(dist, CategoricalDistribution):
            return d.override(dist.choices[0])
        return d.override(dist.low)

    try:
        sweeper.validate_batch_is_legal([[*fixed, *(sample(d) for d in dims.values())]])
        return
    except Exception as e:
        error = e
    for d in dims.values():
        try:
            sweeper.validate_batch_is_legal([[*fixed, sample(d)]])
        except Exception as e:
            raise SweepError(
                f"{d.source}: the searched key does not fit the config: {_why(e)}"
            ) from None
    raise SweepError(f"the sweep's overrides do not compose: {_why(error)}") from None


def _why(e: BaseException) -> str:
    # Hydra's composition errors keep OmegaConf's precise reason in __cause__.
    return f"{e} ({e.__cause__})" if e.__cause__ is not None else str(e)


def _storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage URL, a relative SQLite path made absolute (jobs may run elsewhere)."""
    if not storage:
        return f"sqlite:///{sweep_dir / 'study.db'}"
    prefix = "sqlite:///"
    if storage.startswith(prefix) and not storage[len(prefix) :].startswith("/"):
        path = Path(storage[len(prefix) :]).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"{prefix}{path}"
    return storage


def _exclusive(lock: Path):
    """One sweeper per sweep folder: a second one would fail the first one's RUNNING trials."""
    from liveml.core.locks import exclusive

    return exclusive(
        lock,
        busy=SweepError(
            f"another sweep is running in {lock.parent} (it holds {lock}); wait for it or stop it."
        ),
    )


def _requeue_interrupted(study: optuna.Study, dims: Mapping[str, Dimension]) -> None:
    """Fail the trials an interrupted sweep left RUNNING and ask their params again first.

    Their re-runs are cheap: training resumes a killed run from its epoch checkpoint when the
    config (hence the fingerprint) is the same. Params outside today's search space are dropped
    (sampled afresh): Optuna cannot ask a categorical value its distribution lacks.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        params = {k: v for k, v in t.params.items() if k in dims and _contains(dims[k], v)}
        study.enqueue_trial(params, user_attrs={RERUN_ATTR: t.number})
        log.warning(f"Trial {t.number} was interrupted; running it again with {params}")


def _contains(d: Dimension, value: Any) -> bool:
    dist = d.distribution
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


def _n_done(study: optuna.Study) -> int:
    """Trials that count toward n_trials: COMPLETE and PRUNED ones, from any sweep."""
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


def _env_overrides(env: Mapping[str, str]) -> list[str]:
    # Quoted: URLs and metric names hold ':' and '/'. `++` adds or replaces the key.
    return [
        f"++hydra.job.env_set.{k}={QuotedString(text=v, quote=Quote.single).with_quotes()}"
        for k, v in env.items()
    ]


def _launch(sweeper, trials: list, jobs: list[list[str]]) -> list[JobReturn]:
    """Launch the jobs; job folders are named by trial number (hydra.job.num)."""
    results: list[JobReturn] = []
    i = 0
    try:
        while i < len(trials):
            # A launch numbers its jobs consecutively: split where the trial numbers do not
            # (re-asked trials keep the number they were enqueued with).
            j = i + 1
            while j < len(trials) and trials[j].number == trials[j - 1].number + 1:
                j += 1
            results += sweeper.launcher.launch(jobs[i:j], initial_job_idx=trials[i].number)
            i = j
    except KeyboardInterrupt:
        raise  # the trials stay RUNNING: the next run of the same sweep re-runs them
    except BaseException:
        # A launcher (or a job that exited the process) failed: these trials did not finish.
        for t in trials[len(results) :]:
            with contextlib.suppress(Exception):
                t.study.tell(t, state=TrialState.FAIL)
        raise
    finally:
        # A job reconfigures logging (into its own folder); the sweep logs to the console again.
        configure_log(sweeper.config.hydra.hydra_logging, sweeper.config.hydra.verbose)
    return results


def _tell(study: optuna.Study, trial, ret: JobReturn, metric: str) -> str | None:
    """Tell the trial's outcome; return why it failed (None if it did not)."""
    try:
        record = ret.return_value  # raises the job's exception
    except Exception as e:
        return _fail(study, trial, f"the job raised {type(e).__name__}: {e}")
    with contextlib.suppress(Exception):
        trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
    if not isinstance(record, Mapping):
        return _fail(
            study,
            trial,
            f"the task function returned {type(record).__name__}, not the run record "
            "(a dict with 'metrics')",
        )
    if record.get("run_id"):
        trial.set_user_attr("run_id", str(record["run_id"]))
    if record.get("status") == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return None
    metrics = record.get("metrics") or {}
    value = metrics.get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return _fail(
            study,
            trial,
            f"its run record has no finite {metric!r} (metrics: {sorted(metrics) or 'none'})",
        )
    study.tell(trial, float(value))
    return None


def _fail(study: optuna.Study, trial, why: str) -> str:
    log.error(f"Trial {trial.number} failed: {why}")
    study.tell(trial, state=TrialState.FAIL)
    return f"trial {trial.number}: {why}"


def _report(
    study: optuna.Study,
    sweep_dir: Path,
    url: str,
    metric: str,
    direction: str,
    dims: Mapping[str, Dimension],
) -> None:
    """Log the best trial and write optimization_results.yaml into the sweep folder."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    results: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": url,
        "metric": metric,
        "direction": direction,
        "best_trial": None,
        "best_value": None,
        "best_params": None,
        "best_overrides": None,
        "best_output_dir": None,
        "n_complete": counts["complete"],
        "n_pruned": counts["pruned"],
        "n_failed": counts["fail"],
    }
    if counts["complete"]:
        best = study.best_trial
        results.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=dict(best.params),
            best_overrides=[dims[k].override(v) for k, v in best.params.items() if k in dims],
            best_output_dir=best.user_attrs.get("output_dir"),
        )
        log.info(f"Best trial {best.number}: {metric}={best.value} with {best.params}")
    else:
        log.warning("No trial completed: there is no best trial yet")
    log.info(
        f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed "
        f"trial(s); results in {sweep_dir / RESULTS}"
    )
    atomic_write_text(sweep_dir / RESULTS, yaml.safe_dump(results, sort_keys=False))
