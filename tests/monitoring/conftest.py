"""Fixtures shared by the monitoring tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture
def monitor(monkeypatch, capsys):
    """`liveml monitor ARGS` in `repo`, in this process (saves the 8 s start of a new one; the
    end-to-end test in test_retrain.py runs the real command): (exit code, stdout, stderr)."""
    from liveml.cli import main

    def call(repo: Path, *args: str) -> SimpleNamespace:
        monkeypatch.chdir(repo)
        code = main(["monitor", *args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call
