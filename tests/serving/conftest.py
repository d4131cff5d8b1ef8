"""Serving fixtures: the tiny pipeline's exported models, and real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from liveml.serving.config import ServeConfig

TASKS = ("defects", "speech")


@pytest.fixture(scope="session")
def exports(tiny_pipeline: Path, tmp_path_factory) -> dict[str, Path]:
    """task -> a copy of the tiny pipeline's export folder (model files + card)."""
    root = tmp_path_factory.mktemp("exports")
    return {t: shutil.copytree(tiny_pipeline / f"data/{t}/export", root / t) for t in TASKS}


@pytest.fixture(scope="session")
def defect_image_file(tiny_pipeline: Path) -> Path:
    """A PNG photo from the tiny defects test split."""
    return sorted((tiny_pipeline / "data/defects/raw/images/test").glob("*.png"))[0]


@pytest.fixture(scope="session")
def speech_wav_file(tiny_pipeline: Path) -> Path:
    """A 16 kHz WAV from the tiny speech test split."""
    return sorted((tiny_pipeline / "data/speech/raw/audio/test").glob("*.wav"))[0]


@contextlib.contextmanager
def serving(cfg: ServeConfig, ready: bool = True) -> Iterator[tuple[str, object]]:
    """(base URL, app server state) of a real uvicorn server for `cfg` on a free port, run in a
    thread of this process; waits for /readyz unless `ready` is False."""
    import uvicorn

    from liveml.serving.app import create_app
    from liveml.serving.server import uvicorn_config

    app = create_app(cfg)
    # The same uvicorn settings as `liveml serve` (connection limits included), on a free port.
    config = uvicorn_config(
        app, replace(cfg, host="127.0.0.1", port=0), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        while ready and requests.get(f"{url}/readyz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready: {requests.get(f'{url}/readyz').text}")
            time.sleep(0.05)
        yield url, app.state.server
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def start_server():
    """`serving` as a fixture: `with start_server(cfg) as (url, state): ...`."""
    return serving


@pytest.fixture(scope="session")
def base_config(exports, tmp_path_factory) -> ServeConfig:
    """Both tasks, torch runtime, every input captured into a session folder."""
    return ServeConfig(
        models={t: str(p) for t, p in exports.items()},
        capture_dir=str(tmp_path_factory.mktemp("captures")),
        capture_sample=1.0,
    )


@pytest.fixture(scope="module")
def live_server(base_config) -> Iterator[str]:
    """Base URL of a server for both tasks on the torch runtime, no token."""
    with serving(base_config) as (url, _):
        yield url


@pytest.fixture
def server_with(base_config, tmp_path):
    """Factory: a server with `base_config` changed by keyword arguments (a context manager)."""

    def start(ready: bool = True, **changes):
        changes.setdefault("capture_dir", str(tmp_path / "captures"))
        return serving(replace(base_config, **changes), ready=ready)

    return start
