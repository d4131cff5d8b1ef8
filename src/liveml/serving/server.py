"""Run the app under uvicorn: check every model file against its card first (a bad file stops
the start with the fix, instead of a server that never gets ready), then serve."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from liveml.serving.config import CONFIG_ENV, ServeConfig
from liveml.serving.runtime import verified_bytes


def run_server(cfg: ServeConfig) -> int:
    """Serve until interrupted; returns the exit code."""
    import uvicorn

    for export_dir in cfg.models.values():
        verified_bytes(export_dir, cfg.runtime)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if cfg.workers == 1:
        from liveml.serving.app import create_app

        uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, access_log=False)
        return 0
    # Each worker process captures into the same folder, so each keeps a share of the bound.
    share = replace(cfg, capture_max_bytes=max(1, cfg.capture_max_bytes // cfg.workers))
    os.environ[CONFIG_ENV] = share.to_env()
    uvicorn.run(
        "liveml.serving.app:create_app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        access_log=False,
    )
    return 0
