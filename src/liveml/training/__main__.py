"""Hydra entry point: `python -m liveml.training key=value ...` (add `-m` for a multirun sweep).

Composes the project's conf/ (found from $LIVEML_ROOT or the cwd), checks it, and trains with
`liveml.training.run.train` into `<hydra job output dir>/model`. Each multirun job gets its own run
record and W&B run, grouped by the sweep folder (`tracking.sweeps`); the job returns its record,
which is how a sweeper such as Optuna reads the metric.

Progress: each job's training reports itself (`liveml.core.progress`); in a sweep, its lines
name the job (`job 3/20: train mytask: epoch 2/30, ...`). Lightning's INFO lines print once:
see `_lightning_logs_once`.

Before Hydra sees the command line, `check_overrides` composes the (first job's) overrides with
liveml's `compose`, so a misspelt key gets liveml's message (the keys allowed there), exit 2.
"""

from __future__ import annotations

import sys

from liveml.core import progress


def _job(cfg, project) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from liveml.core.config import ConfigError, check, to_dict
    from liveml.tracking.sweeps import hydra_sweep
    from liveml.training.run import train

    hc = HydraConfig.get()
    try:
        checked = check(to_dict(cfg), source="the composed config")
    except ConfigError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweeper/launcher reports a failed job; exiting would end the sweep
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out_dir = f"{hc.runtime.output_dir}/model"
    _lightning_logs_once()
    sweep = hydra_sweep(project)
    job = _job_name(hc) if sweep else None
    if job:
        shown = " ".join(hc.overrides.task)
        print(f"{job}: started ({shown or 'no overrides'})", file=sys.stderr, flush=True)
    with progress.prefixed(job):
        record = train(checked, out_dir=out_dir, project=project, sweep=sweep)
    print(
        f"trained run {record['run_id']} (fingerprint {record['fingerprint'][:16]}, "
        f"{record.get('status')}) -> {out_dir}; metrics: {record['metrics']}"
    )
    return record


def _job_name(hc) -> str:
    """`job 3/20` (or `job 3` when the sweep's size is unknown) of a multirun job."""
    number = int(hc.job.num) + 1
    total = None
    try:  # sweepers that know their size say so (the Optuna sweeper's n_trials)
        total = int(hc.sweeper.get("n_trials"))
    except (TypeError, ValueError, AttributeError):
        total = None
    return f"job {number}/{total}" if total else f"job {number}"


def _lightning_logs_once() -> None:
    """Lightning prints its INFO lines (`GPU available: ...`) through a console handler of its
    own on the `lightning` logger, and passes them on to the root logger when that had handlers
    at Lightning's import, which Hydra's job logging gives it: every line twice. Keep
    Lightning's own line only (its records stop at the `lightning` logger)."""
    import logging

    import lightning  # noqa: F401 -- its import installs the handler kept here

    logging.getLogger("lightning").propagate = False


def first_job_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of the first job `argv` (Hydra's command line) runs, for composing with
    liveml's `compose`: sweeps (`a=1,2`, `range`, `interval`) replaced by one value, `hydra.*`
    left out. None when the command line does not compose conf/config.yaml as given (--help,
    another config, a bad command line: Hydra answers those itself)."""
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(argv)
        other = ("help", "hydra_help", "info", "shell_completion", "experimental_rerun")
        where = ("config_path", "config_name", "config_dir")
        if any(getattr(args, a, None) for a in (*other, *where)):
            return None
        job = []
        for o in OverridesParser.create().parse_overrides(args.overrides):
            if o.key_or_group.split("/")[0].split(".")[0] == "hydra":
                continue
            if not o.is_sweep_override():
                job.append(o.input_line)
                continue
            first = next(iter(o.sweep_string_iterator()), "0") if o.is_discrete_sweep() else "0"
            job.append(f"{o.get_key_element()}={first}")
        return job
    except (SystemExit, Exception):  # Hydra reports a bad command line in its own words
        return None


def _key_of(override: str) -> str:
    """`model.lr` of `+model.lr@pkg=0.1`."""
    return override.split("=", 1)[0].lstrip("+~").split("@")[0]


def check_overrides(project, argv: list[str]) -> None:
    """Exit 2 with liveml's message (the key, the keys allowed there, the fix) when the command
    line sets a key conf/ does not have: Hydra would reject it first, advising `+key=value`,
    which only adds the misspelt key. Other problems are left to Hydra and to `_job`'s check."""
    from liveml.core.config import UnknownKeyError, compose

    overrides = first_job_overrides(argv)
    if overrides is None:
        return
    try:
        compose(overrides, project=project)
    except UnknownKeyError as e:
        given = [a for a in argv if f"{_key_of(a)}.".startswith(f"{e.key}.")]
        source = f"the override `{given[0]}`" if given else "the command line"
        print(f"error: {UnknownKeyError(source, e.key, e.parent, e.allowed)}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        return  # e.g. a value only a sweep's own jobs give sense to: Hydra and `_job` decide


def main() -> None:
    import hydra

    from liveml.core.config import RUN_CONFIG
    from liveml.core.project import Project

    try:
        project = Project.find()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    check_overrides(project, sys.argv[1:])

    # Hydra needs the config folder when decorating; it is only known once the project is.
    @hydra.main(config_path=str(project.conf_dir), config_name=RUN_CONFIG, version_base="1.3")
    def run(cfg) -> dict:
        return _job(cfg, project)  # a sweeper (Optuna) reads the metrics from the record

    run()


if __name__ == "__main__":
    main()
