"""Connection limits and a free event loop, against real uvicorn servers on 127.0.0.1 with raw
sockets: slow or oversized request heads, slow bodies, too many connections, too many upload
bytes at once, and a heavy upload that must not stall the probes (issue 14, findings 2 and 7).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

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


def test_a_heavy_multipart_never_stalls_the_probes(server_with):
    # The upload, within every limit: 16 files (max_items), ~940 KB, 4096 x 4096 each
    # (max_pixels). It took 7.95 s and stalled /healthz for 6.7 s when decoding ran on the loop.
    png = flat_png()
    files = [("file", (f"p{i}.png", png, "image/png")) for i in range(16)]
    assert sum(len(f[1][1]) for f in files) < 1_000_000
    with server_with(capture_sample=0, queue_size=16) as (url, srv):
        latencies: list[float] = []
        statuses: set[int] = set()
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

        poller = threading.Thread(target=poll)
        poller.start()
        overloaded = {}

        def refuse_while_decoding() -> None:
            # While the 16 inputs wait for decode threads, one more input is over queue_size:
            # it is refused at once, not after the decoding.
            deadline = time.monotonic() + 30
            while srv.decoding == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            start = time.perf_counter()
            r = requests.post(
                f"{url}/v1/defects", data=png, headers={"Content-Type": "image/png"}, timeout=30
            )
            overloaded.update(status=r.status_code, seconds=time.perf_counter() - start, r=r)

        refuser = threading.Thread(target=refuse_while_decoding)
        refuser.start()
        try:
            start = time.perf_counter()
            r = requests.post(f"{url}/v1/defects", files=files, timeout=120)
            took = time.perf_counter() - start
        finally:
            stop.set()
            poller.join(30)
            refuser.join(30)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 16
    assert statuses == {200}
    assert len(latencies) >= 10, (len(latencies), took)
    assert max(latencies) < 0.1, f"/healthz took {max(latencies) * 1000:.0f} ms during {took:.1f} s"
    assert overloaded["status"] == 503, overloaded["r"].text
    assert overloaded["r"].json()["error"]["code"] == "overloaded"
    assert overloaded["seconds"] < 0.5, overloaded


# --- finding 7: connection limits ------------------------------------------------------------


def test_a_slow_header_client_is_cut_off_within_the_timeout(server_with):
    with server_with(capture_sample=0, header_timeout_s=1.0) as (url, _):
        with connect(url) as s:
            start = time.monotonic()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            reply = b""
            # One header byte every 0.1 s: each resets uvicorn's keep-alive timer, not ours.
            try:
                for _ in range(50):
                    s.sendall(b"X")
                    time.sleep(0.1)
                    s.setblocking(False)
                    try:
                        if reply := s.recv(4096):
                            break
                    except BlockingIOError:
                        pass
                    finally:
                        s.setblocking(True)
            except (BrokenPipeError, ConnectionResetError):
                pass
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
