"""`liveml serve` limit flags reach the running server (real process on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import requests

from liveml.cli import SERVE_LIMIT_FIELDS, SERVE_LIMITS, _serve_limits, build_parser
from serving.test_server import start, wait_ready


def test_every_limit_flag_names_a_setting_of_the_server():
    from liveml.serving.config import ServeConfig

    fields = ServeConfig.__dataclass_fields__
    flags = [flag.removeprefix("--").replace("-", "_") for flag, *_ in SERVE_LIMITS]
    assert flags == list(SERVE_LIMIT_FIELDS)
    assert all(name in fields for name, _ in SERVE_LIMIT_FIELDS.values())


def test_sizes_are_given_in_kb_and_mb_and_unset_flags_are_left_out():
    args = build_parser().parse_args(
        ["serve", "--max-header-kb", "8", "--max-inflight-mb", "1.5", "--public", "metrics"]
    )
    assert _serve_limits(args) == {
        "max_header_bytes": 8192,
        "max_inflight_bytes": int(1.5 * 2**20),
        "public_endpoints": ("metrics",),
    }
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--public", "everything"])


def test_limit_flags_hold_in_the_running_server(exports, tmp_path):
    args = [
        "--model",
        f"speech={exports['speech']}",
        "--capture-sample",
        "0",
        "--header-timeout",
        "1",
        "--max-header-kb",
        "4",
        "--public",
        "metrics",
    ]
    proc, url = start(args, tmp_path, LIVEML_API_TOKEN="s3cret")
    try:
        wait_ready(proc, url)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            began = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert s.recv(4096).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - began < 3
        big = requests.get(f"{url}/healthz", headers={"X-Big": "a" * 6000}, timeout=10)
        assert big.status_code == 431
        # --public metrics: /metrics open with a token set; the API still wants the token.
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
