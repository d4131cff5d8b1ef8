"""The headless-Chromium test driver (tests/browser.py) against a real local HTTP server."""

from __future__ import annotations

import functools
import http.server
import socket
import threading

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


def test_open_unreachable_url_raises(b):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrowserError, match=r"could not open.*ERR_CONNECTION_REFUSED"):
        b.open(f"http://127.0.0.1:{port}/")


def test_close_kills_chromium_and_deletes_profile():
    instance = Browser(timeout=15)
    proc, profile = instance._proc, instance._tmp
    instance.close()
    assert proc.poll() is not None
    assert not profile.exists()
    instance.close()  # idempotent


def test_missing_chromium_names_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        Browser()
