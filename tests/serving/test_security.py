"""What the server tells whom, and how it counts clients that leave (issue 14, finding 8): real
servers on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import platform
import socket
import time

import pytest
import requests

from liveml.serving.app import public_card
from liveml.serving.config import ServeConfig


def metric(url: str, line_start: str, headers: dict | None = None) -> float:
    for line in requests.get(f"{url}/metrics", headers=headers, timeout=5).text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_leaves_mid_upload_is_client_closed_not_a_model_error(server_with, caplog):
    with server_with(capture_sample=0) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        with caplog.at_level(logging.INFO, logger="liveml.serving.app"):
            for _ in range(2):
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.sendall(
                        b"POST /v1/defects HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                        b"Content-Length: 100000\r\n\r\n\x89PNG\r\n\x1a\n" + b"\0" * 1000
                    )
                    time.sleep(0.1)
            closed = 'liveml_errors_total{code="client_closed",model="defects"}'
            deadline = time.monotonic() + 10
            while metric(url, closed) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert metric(url, closed) == 2
            assert metric(url, 'liveml_requests_total{model="defects",status="499"}') == 2
            assert metric(url, 'liveml_errors_total{code="model_error"') == 0
            assert metric(url, 'liveml_requests_total{model="defects",status="500"}') == 0
    # Logged as what it is, without a traceback.
    mine = [r for r in caplog.records if r.name == "liveml.serving.app"]
    assert mine and not any(r.exc_info for r in mine)
    assert any("closed the connection" in r.getMessage() for r in mine)


def test_an_open_server_shows_no_host_paths_or_kernel(server_with, exports, tiny_pipeline):
    with server_with(capture_sample=0) as (url, _):
        text = requests.get(f"{url}/v1/models", timeout=10).text
    models = json.loads(text)["models"]
    assert {m["task"] for m in models} == set(exports)
    # No absolute path of this machine, no kernel release.
    for secret in (str(tiny_pipeline), str(next(iter(exports.values())).parent), "/tmp/"):
        assert secret not in text
    assert platform.release() not in text and platform.platform() not in text
    for m in models:
        card = json.loads((exports[m["task"]] / "model_card.json").read_text())
        env = m["card"]["lineage"]["environment"]
        assert env["platform"] == platform.system()  # the OS name, nothing more
        # Identity that a client may need stays.
        assert m["card"]["lineage"]["fingerprint"] == card["lineage"]["fingerprint"]
        assert m["card"]["lineage"]["code"] == card["lineage"]["code"]
        assert m["card"]["exports"] == card["exports"]


def test_token_holders_see_the_whole_card(server_with, exports):
    with server_with(capture_sample=0, token="s3cret") as (url, _):
        auth = {"Authorization": "Bearer s3cret"}
        models = requests.get(f"{url}/v1/models", headers=auth, timeout=10).json()["models"]
    for m in models:
        assert m["card"] == json.loads((exports[m["task"]] / "model_card.json").read_text())


def test_public_card_cuts_paths_and_host_names():
    card = {
        "lineage": {
            "environment": {"platform": "Linux-6.1.0-18-amd64-x86_64-with-glibc2.36", "torch": "2"},
            "wandb": {"dir": "/home/ann/proj/wandb/offline-run-1"},
            "host": {"hostname": "gpu-7", "user": "ann", "cwd": "/home/ann/proj", "cpus": 8},
            "paths": {"data": "data/raw", "win": "C:\\Users\\ann\\run", "home": "~/x"},
            "files": ["/srv/a/b.ts", "rel/c.ts"],
        },
        "name": "m",
    }
    assert public_card(card) == {
        "lineage": {
            "environment": {"platform": "Linux", "torch": "2"},
            "wandb": {"dir": "offline-run-1"},
            "host": {"cpus": 8},
            "paths": {"data": "data/raw", "win": "run"},
            "files": ["b.ts", "rel/c.ts"],
        },
        "name": "m",
    }


GUARDED = [
    "/metrics",
    "/docs",
    "/docs/static/swagger-ui-bundle.js",
    "/openapi.json",
    "/v1/models",
]


def test_with_a_token_docs_schema_and_metrics_need_it_too(server_with):
    with server_with(capture_sample=0, token="s3cret") as (url, _):
        for path in GUARDED:
            r = requests.get(f"{url}{path}", timeout=10)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "unauthorized"
        auth = {"Authorization": "Bearer s3cret"}
        for path in GUARDED:
            assert requests.get(f"{url}{path}", headers=auth, timeout=10).status_code == 200
        schema = requests.get(f"{url}/openapi.json", headers=auth, timeout=10).json()
        assert {"/v1/defects", "/v1/speech"} <= set(schema["paths"])
        # Probes and the page stay open: a load balancer has no token.
        for path in ("/healthz", "/readyz", "/"):
            assert requests.get(f"{url}{path}", timeout=10).status_code == 200


def test_public_endpoints_is_the_documented_choice(server_with):
    with server_with(capture_sample=0, token="s3cret", public_endpoints=("metrics", "docs")) as (
        url,
        _,
    ):
        for path in ("/metrics", "/docs", "/docs/static/swagger-ui.css", "/openapi.json"):
            assert requests.get(f"{url}{path}", timeout=10).status_code == 200, path
        assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    with server_with(capture_sample=0, token="s3cret", public_endpoints=("metrics",)) as (url, _):
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 401


def test_public_endpoints_are_checked_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="public_endpoints=models"):
        ServeConfig(models={"a": "b"}, public_endpoints=("models",))
    monkeypatch.setenv("LIVEML_SERVE_PUBLIC_ENDPOINTS", "metrics, docs")
    monkeypatch.setenv("LIVEML_SERVE_HEADER_TIMEOUT_S", "2.5")
    cfg = ServeConfig(models={"a": "b"})
    assert cfg.public_endpoints == ("metrics", "docs") and cfg.header_timeout_s == 2.5
    # Through the settings each worker process reads.
    monkeypatch.setenv("LIVEML_SERVE_CONFIG", cfg.to_env())
    assert ServeConfig.from_env().public_endpoints == ("metrics", "docs")
