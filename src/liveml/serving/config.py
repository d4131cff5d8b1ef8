"""The server's settings, one typed object: what `liveml serve` flags and the app factory share."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

RUNTIMES = ("torch", "onnx")
# The API token never travels in argv (visible in `ps`); the server reads it from here.
# (The variable's name, not a token: bandit B105 is a false positive.)
TOKEN_ENV = "LIVEML_API_TOKEN"  # nosec B105
# How `--workers N` hands the settings to each uvicorn worker process.
CONFIG_ENV = "LIVEML_SERVE_CONFIG"
# Settings without a `liveml serve` flag are read from LIVEML_SERVE_<NAME> (e.g.
# LIVEML_SERVE_HEADER_TIMEOUT_S=5); an explicit constructor argument still wins.
ENV_PREFIX = "LIVEML_SERVE_"
# Endpoints that may stay open when a token is set (`public_endpoints`): "metrics" is /metrics,
# "docs" is /docs (with its files under /docs/static) and /openapi.json.
PUBLIC_ENDPOINTS = ("metrics", "docs")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _from_env(name: str, default, kind=None):
    """A field whose default LIVEML_SERVE_<NAME> overrides."""
    kind = kind or type(default)

    def make():
        var = ENV_PREFIX + name.upper()
        raw = os.environ.get(var, "").strip()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(
                f"{var}={raw!r} is not a valid {name}; fix: set it like {default!r} or unset it"
            ) from None

    return field(default_factory=make)


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
    # Decoding runs off the event loop on this many threads (bounds decode CPU and memory); by
    # default one core is left to the event loop and the inference thread.
    decode_threads: int = _from_env("decode_threads", max(1, min(4, (os.cpu_count() or 1) - 1)))
    # Connection limits (docs/serving.md): a request's headers must arrive within
    # header_timeout_s and be at most max_header_bytes; its body within body_timeout_s; an idle
    # keep-alive connection closes after keepalive_s; beyond max_connections (open connections
    # plus requests in progress) new requests get 503; request bodies held in memory at once
    # stay under max_inflight_bytes (at least one max_body_bytes), beyond which 503.
    header_timeout_s: float = _from_env("header_timeout_s", 10.0)
    body_timeout_s: float = _from_env("body_timeout_s", 60.0)
    keepalive_s: float = _from_env("keepalive_s", 5.0)
    max_header_bytes: int = _from_env("max_header_bytes", 16 * 1024)
    max_connections: int = _from_env("max_connections", 256)
    max_inflight_bytes: int = _from_env("max_inflight_bytes", 256 * 1024 * 1024)
    # With a token set, every endpoint but /, /healthz and /readyz needs it, unless named here.
    public_endpoints: tuple[str, ...] = _from_env("public_endpoints", (), _names)

    def __post_init__(self) -> None:
        problems = []
        self.public_endpoints = tuple(self.public_endpoints)
        unknown = sorted(set(self.public_endpoints) - set(PUBLIC_ENDPOINTS))
        if unknown:
            problems.append(
                f"public_endpoints={','.join(unknown)} (choose from {', '.join(PUBLIC_ENDPOINTS)})"
            )
        if self.runtime not in RUNTIMES:
            problems.append(f"runtime={self.runtime!r} (choose {' or '.join(RUNTIMES)})")
        positive = (
            "workers",
            "max_batch",
            "queue_size",
            "max_body_bytes",
            "max_items",
            "decode_threads",
            "max_connections",
            "max_inflight_bytes",
        )
        for name in positive:
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (must be >= 1)")
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)} (must be > 0 seconds)")
        if self.max_header_bytes < 1024:
            problems.append(f"max_header_bytes={self.max_header_bytes} (must be >= 1024)")
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
