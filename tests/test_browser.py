"""The headless-Chromium test helper (tests/browser.py: playwright driving Debian's chromium)
against a real local HTTP server."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from browser import Browser, BrowserError

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>t</title></head>
<body data-state="ready">
<label for="f">file</label> <input type="file" id="f">
<pre id="content"></pre>
<button id="boom" onclick="setTimeout(() => { throw new Error('kaboom'); })">boom</button>
<script>
document.getElementById("f").addEventListener("change", async (ev) => {
  document.getElementById("content").textContent = await ev.target.files[0].text();
  document.body.dataset.state = "read";
});
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """Base URL of a ThreadingHTTPServer serving a tiny page from a temp folder."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def b():
    """One browser for the module: starting Chromium is the slow part."""
    with Browser(timeout=15) as instance:
        yield instance


def test_open_and_evaluate(b, site):
    b.open(f"{site}/index.html")
    assert b.evaluate("document.title") == "t"
    assert b.evaluate("location.pathname") == "/index.html"
    # Promises are awaited and values come back as JSON-able Python values.
    assert b.evaluate("Promise.resolve({a: [1, 2], b: null})") == {"a": [1, 2], "b": None}
    assert b.evaluate("undefined") is None


def test_evaluate_raises_with_the_js_error(b, site):
    b.open(f"{site}/index.html")
    with pytest.raises(BrowserError, match="ReferenceError: nope is not defined"):
        b.evaluate("nope()")
    with pytest.raises(BrowserError, match="rejected"):
        b.evaluate("Promise.reject(new Error('rejected'))")


def test_wait_for_polls_and_times_out_with_context(b, site):
    b.open(f"{site}/index.html")
    b.evaluate("setTimeout(() => { window.later = 7; }, 200); 0")
    assert b.wait_for("window.later", timeout=5) == 7
    with pytest.raises(TimeoutError, match=r"window\.never.*ready"):
        b.wait_for("window.never", timeout=0.3)


def test_set_files_fires_change(b, site, tmp_path):
    b.open(f"{site}/index.html")
    note = tmp_path / "note.txt"
    note.write_text("hello from a file")
    b.set_files("#f", [note])
    b.wait_for("document.body.dataset.state === 'read'", timeout=5)
    assert b.evaluate("document.getElementById('content').textContent") == "hello from a file"
    with pytest.raises(BrowserError, match="no element"):
        b.set_files("#missing", [note])


def test_uncaught_error_is_collected(site):
    # A fresh browser: console_errors of the shared one must stay clean for the other tests.
    with Browser(timeout=15) as fresh:
        fresh.open(f"{site}/index.html")
        assert fresh.console_errors == []
        fresh.evaluate("document.getElementById('boom').click()")
        fresh.evaluate("console.error('logged', 42)")
        # Events arrive before later replies: after this the timer's throw has been reported.
        fresh.evaluate("new Promise(r => setTimeout(r, 50))")
        errors = fresh.console_errors
        assert any("kaboom" in e for e in errors), errors
        assert any("logged 42" in e for e in errors), errors
        # An alert() is accepted at once and recorded: the page never blocks on it.
        assert fresh.evaluate("alert('hello'); 5") == 5
        assert fresh.dialogs == ["hello"]


def test_open_unreachable_url_raises(b, site):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrowserError, match=r"could not open.*ERR_CONNECTION_REFUSED"):
        b.open(f"http://127.0.0.1:{port}/")
    # Chromium's error page that follows a failed navigation does not disturb the next one.
    b.open(f"{site}/index.html")
    assert b.evaluate("document.title") == "t"


def test_requests_box_and_screenshot(b, site, tmp_path):
    b.requests.clear()
    b.open(f"{site}/index.html")
    assert b.requests == [f"{site}/index.html"]
    box = b.box("#f")
    assert box is not None and box["width"] > 0 and box["height"] > 0
    assert b.box("#missing") is None
    png = b.screenshot(tmp_path / "page.png", selector="#f")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and (tmp_path / "page.png").read_bytes() == png
    assert b.screenshot().startswith(b"\x89PNG")


def test_asyncio_still_runs_beside_a_browser(b):
    """Playwright's loop lives on the helper's own thread, not the test's."""
    assert asyncio.run(asyncio.sleep(0, result=3)) == 3
    assert b.evaluate("1 + 1") == 2


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def chromium_processes() -> set[int]:
    out = set()
    for p in descendants(os.getpid()):
        try:
            if b"chrom" in Path(f"/proc/{p}/cmdline").read_bytes():
                out.add(p)
        except OSError:
            pass
    return out


def test_close_ends_chromium_and_the_driver():
    before = descendants(os.getpid())
    instance = Browser(timeout=15)
    assert chromium_processes() - before, "no Chromium process was started"
    instance.close()
    deadline = time.monotonic() + 10
    while descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not descendants(os.getpid()) - before
    instance.close()  # idempotent
    with pytest.raises(BrowserError, match="closed"):
        instance.evaluate("1")


def test_missing_chromium_names_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        Browser()
