"""Stage check_config: stop `dvc repro` when params.yaml no longer matches conf/.

DVC only sees params.yaml; without this guard an edit in conf/ would be silently ignored and
a stale model reused. `dvc exp run` recomposes params.yaml from conf/ itself, so it passes.
"""

from __future__ import annotations

import os

from liveml.stages import run_stage


def main() -> None:
    from liveml.core.config import ConfigError, stale_keys
    from liveml.core.project import Project

    if os.environ.get("DVC_EXP_BASELINE_REV"):
        print("check_config: inside `dvc exp run`; DVC composed params.yaml from conf/")
        return
    stale = stale_keys(Project.find())
    if stale:
        raise ConfigError(
            "params.yaml is out of date with conf/ at: "
            + ", ".join(stale[:20])
            + ". Run `liveml params` to recompose it (`make repro` does this for you), "
            "then `dvc repro` re-runs exactly the stages those values affect."
        )
    print("check_config: params.yaml matches conf/")


if __name__ == "__main__":
    run_stage(main)
