"""Shell and git calls for tests that build git repos in tmp_path: a failing call fails the
test with its output."""

from __future__ import annotations

import subprocess
from pathlib import Path


def sh(cwd: Path, *cmd: str) -> str:
    """Run `cmd` in `cwd`; its stdout, or an AssertionError with stdout and stderr."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"{cmd}: {out.stdout}\n{out.stderr}"
    return out.stdout


def git(cwd: Path, *args: str) -> str:
    """`git ARGS` in `cwd` with a committer identity (CI machines have none)."""
    return sh(cwd, "git", "-c", "user.email=t@liveml", "-c", "user.name=t", *args)
