"""The server's settings, one typed object: what `liveml serve` flags and the app factory share."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

RUNTIMES = ("torch", "onnx")
# The API token never travels in argv (visible in `ps`); the server reads it from here.
TOKEN_ENV = "LIVEML_API_TOKEN"
# How `--workers N` hands the settings to each uvicorn worker process.
CONFIG_ENV = "LIVEML_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Serving settings; `models` maps a task name to its export folder."""

    models: dict[str, str] = field(default_factory=dict)
    runtime: str = "torch"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Dynamic batching (per model).
    max_batch: int = 16
    max_wait_ms: float = 2.0
    queue_size: int = 256
    # Request limits.
    max_body_bytes: int = 16 * 1024 * 1024
    max_items: int = 16
    max_pixels: int = 4096 * 4096
    max_audio_s: float = 30.0
    # Auth: None = open. Read from TOKEN_ENV by `liveml serve`.
    token: str | None = field(default=None, repr=False)
    # Input capture for drift monitoring; sample 0 turns it off.
    capture_dir: str | None = "captures"
    capture_sample: float = 0.1
    capture_max_bytes: int = 256 * 1024 * 1024
    # Hot reload: seconds between checks of the export folders' model cards; 0 = never.
    reload_s: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.runtime not in RUNTIMES:
            problems.append(f"runtime={self.runtime!r} (choose {' or '.join(RUNTIMES)})")
        for name in ("workers", "max_batch", "queue_size", "max_body_bytes", "max_items"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (must be >= 1)")
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms={self.max_wait_ms} (must be >= 0)")
        if self.reload_s < 0:
            problems.append(f"reload_s={self.reload_s} (must be >= 0; 0 turns reload off)")
        if not 0 <= self.capture_sample <= 1:
            problems.append(f"capture_sample={self.capture_sample} (must be in [0, 1])")
        if not self.models:
            problems.append("models is empty (give at least one TASK=EXPORT_DIR)")
        if problems:
            raise ValueError("bad serving settings: " + "; ".join(problems))

    @property
    def limits(self) -> dict:
        return {"max_pixels": self.max_pixels, "max_audio_s": self.max_audio_s}

    def to_env(self) -> str:
        """JSON for CONFIG_ENV, without the token (each worker reads TOKEN_ENV itself)."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "token"})

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise RuntimeError(f"{CONFIG_ENV} is not set; start the server with `liveml serve`")
        return cls(**json.loads(raw), token=os.environ.get(TOKEN_ENV) or None)
