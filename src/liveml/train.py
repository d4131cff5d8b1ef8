"""Hydra entry point: `python -m liveml.train key=value ...` (add `-m` for a multirun sweep).

Composes the project's conf/ (found from $LIVEML_ROOT or the cwd), checks it, and trains with
`liveml.training.train` into `<hydra job output dir>/model`. A multirun groups its W&B runs
under the sweep folder's name.
"""

from __future__ import annotations

import sys


def _job(cfg, project) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from liveml.config import ConfigError, check, to_dict
    from liveml.training import train

    hc = HydraConfig.get()
    try:
        checked = check(to_dict(cfg), source="the composed config")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sweep = str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    out_dir = f"{hc.runtime.output_dir}/model"
    record = train(checked, out_dir=out_dir, project=project, sweep=sweep)
    print(
        f"trained run {record['run_id']} (fingerprint {record['fingerprint'][:16]}) -> {out_dir}; "
        f"metrics: {record['metrics']}"
    )
    return record


def main() -> None:
    import hydra

    from liveml.config import RUN_CONFIG
    from liveml.project import Project

    try:
        project = Project.find()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    # Hydra needs the config folder when decorating; it is only known once the project is.
    @hydra.main(config_path=str(project.conf_dir), config_name=RUN_CONFIG, version_base="1.3")
    def run(cfg) -> None:
        _job(cfg, project)

    run()


if __name__ == "__main__":
    main()
