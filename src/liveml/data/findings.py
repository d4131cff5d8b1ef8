"""`Findings`: the problems a data validation found, per named check, each naming its file.

Shared by every task's `checks.validate`, so their reports have one shape: `problems` (the list
the validate stage fails with) and `checks` (passed / failed-file count per check).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class Findings:
    """Problems found so far, per check, each as (file, message)."""

    def __init__(self, data_dir: Path, checks: Sequence[str]) -> None:
        self.data_dir = Path(data_dir)
        self.names = tuple(checks)
        self.by_check: dict[str, list[tuple[str, str]]] = {name: [] for name in self.names}

    def add(self, check: str, rel_file: str, message: str) -> None:
        self.by_check[check].append((str(self.data_dir / rel_file), message))

    def problems(self) -> list[list[str]]:
        return [[f, m] for name in self.names for f, m in self.by_check[name]]

    def checks(self) -> dict[str, dict]:
        return {
            name: {"passed": not found, "failed_files": len({f for f, _ in found})}
            for name, found in self.by_check.items()
        }
