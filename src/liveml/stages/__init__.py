"""DVC stage scripts: one thin module per stage in dvc.yaml, `main()` only wiring."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_stage(fn: Callable[[], None]) -> None:
    """Run a stage's body; a known user-facing error becomes one clear message and exit 1."""
    from liveml.config import ConfigError
    from liveml.tasks.base import DataValidationError

    try:
        fn()
    except (ConfigError, DataValidationError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
