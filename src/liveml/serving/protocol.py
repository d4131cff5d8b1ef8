"""uvicorn's httptools protocol with the connection limits it lacks: a deadline for a request's
headers and a cap on their size.

uvicorn only times out a connection that sits idle after a response (`timeout_keep_alive`),
and a timer that any byte resets: a client trickling header bytes, or one that connects and
sends nothing, held its connection for as long as it liked, and httptools buffered an 8 MB
header. Here every request's head (request line + headers) must arrive within
`header_timeout_s` of the connection opening (or of the previous response) and stay within
`max_header_bytes`: a late one gets 408, an oversized one 431, and the connection closes.

The limits travel on the uvicorn `Config` (attribute LIMITS_ATTR, set by
`liveml.serving.server.uvicorn_config`); worker processes started by uvicorn itself read them
from the settings in CONFIG_ENV.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

LIMITS_ATTR = "liveml_limits"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_header_bytes: int


@cache
def _limits_from_env() -> ConnectionLimits:
    from liveml.serving.config import CONFIG_ENV, ServeConfig

    cfg = ServeConfig.from_env() if os.environ.get(CONFIG_ENV) else None
    if cfg is None:  # no settings at all: the documented defaults
        fields = ServeConfig.__dataclass_fields__
        return ConnectionLimits(
            fields["header_timeout_s"].default_factory(),
            fields["max_header_bytes"].default_factory(),
        )
    return ConnectionLimits(cfg.header_timeout_s, cfg.max_header_bytes)


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus a header deadline (408) and a header size cap (431)."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, LIMITS_ATTR, None) or _limits_from_env()
        self.header_timeout_s = limits.header_timeout_s
        self.max_header_bytes = limits.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._head_bytes = 0  # raw bytes received while waiting for this head
        self._head_size = 0  # the request line and headers parsed so far
        self._rejected = False

    # -- the head deadline ----------------------------------------------------------------

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._awaiting_head = True
        self._head_bytes = self._head_size = 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        self._awaiting_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            # Nothing of a request yet (a new or idle keep-alive connection): close quietly, as
            # uvicorn's keep-alive timeout does; a client may reuse a pooled connection and
            # must not read an answer it did not ask for.
            self._stop_head_timer()
            self.transport.close()
        else:
            self._reject(
                408,
                "Request Timeout",
                f"the request headers did not arrive within {self.header_timeout_s:g} s",
            )

    def _reject(self, status: int, reason: str, message: str) -> None:
        log.info("closing a connection from %s: %s", _peer(self.client), message)
        self._rejected = True
        self._stop_head_timer()
        self.transport.write(_response(status, reason, message + "\n"))
        self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # closing: the rest of what the client sends is not parsed
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > self.max_header_bytes and not self._rejected:
            # Still no end of the head after more bytes than a head may have.
            self._too_large()

    def _too_large(self) -> None:
        self._reject(
            431,
            "Request Header Fields Too Large",
            f"the request headers are over the server's limit of {self.max_header_bytes} bytes",
        )

    def send_400_response(self, msg: str) -> None:
        if self._rejected:  # a callback below refused the head; the answer is already sent
            return
        self._stop_head_timer()
        super().send_400_response(msg)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._awaiting_head:  # a pipelined request: its own deadline starts now
            self._await_head()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        if self._head_size > self.max_header_bytes:
            self._too_large()
            # Stops the parser; uvicorn's data_received answers 400 to the error, which
            # send_400_response above skips (the 431 is out).
            raise _HeadRefused
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its head was parsed already: no new deadline
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_head()


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


def _peer(client) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
