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
