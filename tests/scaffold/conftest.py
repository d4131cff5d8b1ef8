"""Fixtures of the scaffold tests: liveml's wheel built from this checkout, and a project's own
venv layered on liveml's (so a generated project installs and runs offline, in seconds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def liveml_wheel(tmp_path_factory) -> Path:
    """`pip wheel` of this checkout (pyproject.toml, README.md, src/), built in a copy so the
    build leaves nothing in the repo: what `pip install liveml` would install."""
    src = tmp_path_factory.mktemp("liveml-src")
    shutil.copy2(REPO / "pyproject.toml", src)
    shutil.copy2(REPO / "README.md", src)
    shutil.copytree(
        REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, str(src), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob("liveml-*.whl")
    return wheel


@pytest.fixture
def project_env() -> dict[str, str]:
    """The environment a generated project's commands run in (see `clean_env`)."""
    return clean_env()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a generated project's commands: offline W&B and DVC, nothing of
    this test run (or of an enclosing `make`) leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LIVEML_ROOT", "VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    return {**env, "WANDB_MODE": "offline", "DVC_NO_ANALYTICS": "1", **extra}


@pytest.fixture
def layered_venv(liveml_wheel):
    """Factory: `layered_venv(project)` makes `project/.venv` and returns its python."""
    return lambda project: _layered_venv(project, liveml_wheel)


def _layered_venv(project: Path, wheel: Path) -> Path:
    """`project/.venv`: a venv whose own site-packages holds only liveml's wheel (and, once
    `make` ran, the project), with liveml's dependencies seen through a .pth file pointing at
    the running interpreter's site-packages. Entry points of the project register only here."""
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "_liveml_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    return python


@pytest.fixture
def run_make():
    """Factory: `run_make(project, target)` runs `make <target>` in a generated project."""
    return _make


def _make(project: Path, target: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`make <target>` in a generated project; the output is kept for the assertion message."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    return subprocess.run(
        ["make", target],
        cwd=project,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
    )
