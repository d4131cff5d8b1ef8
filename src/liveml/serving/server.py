"""Run the app under uvicorn: check every model file against its card first (a bad file stops
the start with the fix, instead of a server that never gets ready), then serve with the
connection limits of the settings (docs/serving.md). With several workers, their Prometheus
metrics share a private folder that lives as long as the server (liveml.serving.metrics)."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from typing import Any

from liveml.serving.config import CONFIG_ENV, ServeConfig
from liveml.serving.metrics import MULTIPROC_ENV, shared_dir
from liveml.serving.runtime import verified_bytes

PROTOCOL = "liveml.serving.protocol:LimitedHttpProtocol"


def uvicorn_options(cfg: ServeConfig) -> dict[str, Any]:
    """uvicorn settings for `cfg`'s connection limits (the rest are in the protocol and app)."""
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": cfg.keepalive_s,
        "limit_concurrency": cfg.max_connections,
        # Used by uvicorn's h11 protocol only; kept equal in case a deployment picks h11.
        "h11_max_incomplete_event_size": cfg.max_header_bytes,
        "access_log": False,
    }


def uvicorn_config(app, cfg: ServeConfig, **options: Any):
    """A uvicorn Config serving `app` with `cfg`'s limits; `options` add or override uvicorn's."""
    import uvicorn

    from liveml.serving.protocol import LIMITS_ATTR, ConnectionLimits

    config = uvicorn.Config(
        app, host=cfg.host, port=cfg.port, **{**uvicorn_options(cfg), **options}
    )
    setattr(config, LIMITS_ATTR, ConnectionLimits(cfg.header_timeout_s, cfg.max_header_bytes))
    return config


def run_server(cfg: ServeConfig) -> int:
    """Serve until interrupted; returns the exit code."""
    import uvicorn

    for export_dir in cfg.models.values():
        verified_bytes(export_dir, cfg.runtime)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if cfg.workers == 1:
        from liveml.serving.app import create_app

        server = uvicorn.Server(uvicorn_config(create_app(cfg), cfg))
        # uvicorn re-raises the Ctrl-C it handled once it has shut down (uvicorn.run does too).
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else 1
    # Each worker process captures into the same folder, so each keeps a share of the bound.
    share = replace(cfg, capture_max_bytes=max(1, cfg.capture_max_bytes // cfg.workers))
    # Each worker reads its settings, the connection limits included, from here.
    os.environ[CONFIG_ENV] = share.to_env()
    # The workers count into one folder, so any of them answers /metrics for all (metrics.py).
    with shared_dir() as metrics_dir, _environ(MULTIPROC_ENV, metrics_dir):
        uvicorn.run(
            "liveml.serving.app:create_app_from_env",
            factory=True,
            host=cfg.host,
            port=cfg.port,
            workers=cfg.workers,
            **uvicorn_options(cfg),
        )
    return 0


@contextlib.contextmanager
def _environ(name: str, value: str):
    """`name=value` in this process's environment (which worker processes inherit) while
    inside; the former value, or none, after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
