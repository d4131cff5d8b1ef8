"""Hydra entry point: `python -m liveml.training key=value ...` (add `-m` for a multirun sweep).

Composes the project's conf/ (found from $LIVEML_ROOT or the cwd), checks it, and trains with
`liveml.training.run.train` into `<hydra job output dir>/model`. Each multirun job gets its own run
record and W&B run, grouped by the sweep folder (`tracking.sweeps`); the job returns its record,
which is how a sweeper such as Optuna reads the metric.
"""

from __future__ import annotations

import sys


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
    record = train(checked, out_dir=out_dir, project=project, sweep=hydra_sweep(project))
    print(
        f"trained run {record['run_id']} (fingerprint {record['fingerprint'][:16]}, "
        f"{record.get('status')}) -> {out_dir}; metrics: {record['metrics']}"
    )
    return record


def main() -> None:
    import hydra

    from liveml.core.config import RUN_CONFIG
    from liveml.core.project import Project

    try:
        project = Project.find()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    # Hydra needs the config folder when decorating; it is only known once the project is.
    @hydra.main(config_path=str(project.conf_dir), config_name=RUN_CONFIG, version_base="1.3")
    def run(cfg) -> dict:
        return _job(cfg, project)  # a sweeper (Optuna) reads the metrics from the record

    run()


if __name__ == "__main__":
    main()
