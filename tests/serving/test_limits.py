"""Connection limits and a free event loop, against real uvicorn servers on 127.0.0.1 with raw
sockets: slow or oversized request heads, slow bodies, too many connections, too many upload
bytes at once, and a heavy upload that must not stall the probes (issue 14, findings 2 and 7).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def connect(url: str, timeout: float = 10) -> socket.socket:
    return socket.create_connection(address(url), timeout=timeout)


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket times out)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def flat_png(width: int = 4096, height: int = 4096) -> bytes:
    """A PNG of one colour: 4096 x 4096 is 48 MiB of pixels in ~60 KB of file."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buf, "PNG")
    return buf.getvalue()


# --- finding 2: decoding off the event loop --------------------------------------------------


def test_a_heavy_multipart_never_stalls_the_probes(exports, tmp_path):
    # The upload, within every limit: 16 files (max_items), ~940 KB, 4096 x 4096 each
    # (max_pixels). It took 7.95 s and stalled /healthz for 6.7 s when decoding ran on the loop.
    # A real `liveml serve` process: the client's threads must not share the server's GIL.
    png = flat_png()
    files = [("file", (f"p{i}.png", png, "image/png")) for i in range(16)]
    assert sum(len(f[1][1]) for f in files) < 1_000_000
    task, export = next((t, d) for t, d in exports.items() if (d / "model.onnx").exists())
    args = ["--model", f"{task}={export}", "--runtime", "onnx", "--capture-sample", "0"]
    with liveml_serve([*args, "--queue-size", "16"], tmp_path) as url:
        # On a shared 2-core machine another process can take the CPU from the server for
        # 100 ms now and then, whatever the server does: one more try before failing. (A loop
        # that decodes stalls for seconds, every time.)
        for attempt in range(2):
            run = upload_while_probing(url, task, files, png)
            if max(run["latencies"]) < 0.1 or attempt == 1:
                break
    assert run["status"] == 200, run["text"]
    assert run["results"] == 16
    assert run["statuses"] == {200}
    slowest = max(run["latencies"])
    assert slowest < 0.1, f"/healthz took {slowest * 1000:.0f} ms during {run['took']:.1f} s"
    assert len(run["latencies"]) >= 10, run
    # While the 16 inputs waited for a decode thread, one more was over queue_size: refused
    # at once, not after the decoding.
    refused = run["refused"]
    assert refused["status"] == 503 and refused["code"] == "overloaded", refused
    assert refused["seconds"] < 0.5, refused


def upload_while_probing(url: str, task: str, files: list, png: bytes) -> dict:
    """POST the multipart `files` while /healthz is polled and, once decoding has started, one
    more input is sent; what each saw."""
    latencies: list[float] = []
    statuses: set[int] = set()
    refused: dict = {}
    stop = threading.Event()

    def poll() -> None:
        with requests.Session() as s:
            s.get(f"{url}/healthz", timeout=10)  # a warm connection, as a probe keeps
            while not stop.is_set():
                start = time.perf_counter()
                r = s.get(f"{url}/healthz", timeout=10)
                latencies.append(time.perf_counter() - start)
                statuses.add(r.status_code)
                time.sleep(0.01)

    def one_more() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and gauge(url, "liveml_decoding_inputs") == 0:
            time.sleep(0.01)
        start = time.perf_counter()
        r = requests.post(
            f"{url}/v1/{task}", data=png, headers={"Content-Type": "image/png"}, timeout=60
        )
        code = r.json()["error"]["code"] if r.status_code != 200 else None
        refused.update(status=r.status_code, code=code, seconds=time.perf_counter() - start)

    threads = [threading.Thread(target=poll), threading.Thread(target=one_more)]
    for t in threads:
        t.start()
    try:
        start = time.perf_counter()
        r = requests.post(f"{url}/v1/{task}", files=files, timeout=120)
        took = time.perf_counter() - start
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    results = len(r.json().get("results", [])) if r.status_code == 200 else 0
    return {
        "status": r.status_code,
        "text": r.text[:300],
        "results": results,
        "took": took,
        "latencies": latencies,
        "statuses": statuses,
        "refused": refused,
    }


def gauge(url: str, name: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@contextlib.contextmanager
def liveml_serve(args: list[str], cwd, **env: str):
    """Base URL of a `liveml serve` process on a free port, once its models are ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "liveml"), "serve", "--port", str(port), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


# --- finding 7: connection limits ------------------------------------------------------------


def test_a_slow_header_client_is_cut_off_within_the_timeout(server_with):
    with server_with(capture_sample=0, header_timeout_s=1.0) as (url, _):
        with connect(url) as s:
            start = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            reply = b""
            # One header byte every 0.1 s: each resets uvicorn's keep-alive timer, not ours.
            s.settimeout(0.1)
            for _ in range(50):
                try:
                    s.sendall(b"X")
                    reply = s.recv(4096)
                    break  # an answer, or b"": closed
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            s.settimeout(5)
            reply += read_until_closed(s)
            cut_after = time.monotonic() - start
        assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
        assert 0.9 < cut_after < 2.0, cut_after
        # A connection that sends nothing at all is closed quietly at the same deadline.
        with connect(url) as s:
            start = time.monotonic()
            assert read_until_closed(s) == b""
            assert time.monotonic() - start < 2.0
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 64 * 1024 + b"\r\n",  # one huge header
        b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(24)),  # many that add up
    ],
    ids=["one-64k-header", "24-1k-headers"],
)
def test_an_oversized_header_gets_431(server_with, headers):
    with server_with(capture_sample=0) as (url, srv):
        assert srv.cfg.max_header_bytes == 16 * 1024  # the documented default
        with connect(url) as s:
            # The server may close before it has read it all.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            reply = read_until_closed(s)
        assert reply.startswith(b"HTTP/1.1 431"), reply[:80]
        # A head just under the limit is served.
        ok = requests.get(f"{url}/healthz", headers={"X-Fine": "c" * 8000}, timeout=5)
        assert ok.status_code == 200


def test_connections_beyond_the_limit_get_503_quickly(server_with):
    with server_with(capture_sample=0, max_connections=4) as (url, _):
        idle = [connect(url) for _ in range(4)]
        try:
            time.sleep(0.3)  # accepted by the server
            start = time.monotonic()
            r = requests.get(f"{url}/healthz", timeout=5)
            assert r.status_code == 503, r.text
            assert time.monotonic() - start < 0.5
        finally:
            for s in idle:
                s.close()
        time.sleep(0.3)
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_a_slow_body_gets_408(server_with):
    with server_with(capture_sample=0, body_timeout_s=1.0) as (url, _):
        with connect(url) as s:
            start = time.monotonic()
            s.sendall(
                b"POST /v1/defects HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n\x89PNG"
            )
            reply = read_until_closed(s)
            took = time.monotonic() - start
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"body_timeout"' in reply and b"connection: close" in reply.lower()
        assert 0.9 < took < 2.5, took


def test_upload_bytes_held_at_once_are_bounded(server_with):
    mib = 1024 * 1024
    with server_with(
        capture_sample=0, max_body_bytes=mib, max_inflight_bytes=2 * mib, body_timeout_s=10
    ) as (url, srv):
        head = (
            b"POST /v1/defects HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % mib
        )
        slow = [connect(url) for _ in range(2)]
        try:
            for s in slow:  # two uploads of 1 MiB under way: the 2 MiB budget is taken
                s.sendall(head + b"\x89PNG")
            deadline = time.monotonic() + 5
            while srv.body_bytes < 2 * mib and time.monotonic() < deadline:
                time.sleep(0.01)
            start = time.monotonic()
            r = requests.post(
                f"{url}/v1/defects",
                data=b"\x89PNG" + b"\0" * (mib - 4),
                headers={"Content-Type": "image/png"},
                timeout=10,
            )
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded", r.text
            assert r.headers["Retry-After"] == "1"
            assert time.monotonic() - start < 1.0
        finally:
            for s in slow:
                s.close()
        deadline = time.monotonic() + 5
        while srv.body_bytes and time.monotonic() < deadline:  # released as they go away
            time.sleep(0.01)
        assert srv.body_bytes == 0
