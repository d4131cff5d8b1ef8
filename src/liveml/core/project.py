"""Where a liveml project lives on disk: the folder holding conf/config.yaml and dvc.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> Project:
        """The nearest ancestor of `start` (default: $LIVEML_ROOT, else the cwd) holding
        conf/config.yaml."""
        here = Path(start or os.environ.get("LIVEML_ROOT") or Path.cwd()).resolve()
        for d in (here, *here.parents):
            if (d / "conf" / "config.yaml").is_file():
                return cls(d)
        raise FileNotFoundError(
            f"no liveml project at or above {here}: expected conf/config.yaml. "
            "Run liveml from the project folder or set LIVEML_ROOT."
        )

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / "requirements.lock"

    def path(self, rel: str | os.PathLike) -> Path:
        """A config path (relative to the project root) as an absolute path."""
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def home(self) -> Path:
        """Where run records and W&B files are kept: the project root, except in a queued DVC
        experiment, which runs in a throw-away copy under `.dvc/tmp/exps/`; its records go to
        the repo it was queued from (DVC passes that as $DVC_ROOT), so none is lost."""
        queued_from = os.environ.get("DVC_ROOT")
        if queued_from:
            parent = Path(queued_from).resolve()
            if self.root != parent and self.root.is_relative_to(parent / ".dvc" / "tmp"):
                return parent
        return self.root

    def home_path(self, rel: str | os.PathLike) -> Path:
        """A path of run records or W&B files (relative to `home`) as an absolute path."""
        p = Path(rel)
        return p if p.is_absolute() else self.home / p
