"""A tiny headless-Chromium driver for tests, over the Chrome DevTools Protocol (CDP).

No playwright/selenium on these machines: this launches the system Chromium, connects to its
page target with aiohttp's websocket client and offers a small synchronous API. The asyncio
loop runs in a private background thread, so tests call plain methods.

    with Browser() as b:
        b.open("http://127.0.0.1:8000/")
        b.wait_for("document.body.dataset.state === 'ready'")
        b.set_files("#defects-file", [path])
        assert b.console_errors == []

Tests import it as `from browser import Browser` (pyproject puts tests/ on pytest's pythonpath).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Loopback must never go through an http_proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
INSTALL_HINT = "install Debian's chromium (apt-get install -y chromium); `make test` does this"


def find_chromium() -> str:
    """Path of the first Chromium-like browser on PATH, or RuntimeError naming the fix."""
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        f"no Chromium found on PATH (tried {', '.join(EXECUTABLES)}): {INSTALL_HINT}"
    )


class BrowserError(RuntimeError):
    """A CDP command failed, or JavaScript threw while evaluating an expression."""


def _describe_exception(details: dict) -> str:
    """The most useful text of CDP `exceptionDetails`: the stack when there is one."""
    exc = details.get("exception") or {}
    text = exc.get("description") or exc.get("value") or details.get("text") or "exception"
    where = details.get("url") or ""
    if where:
        text = f"{text} ({where}:{details.get('lineNumber', 0) + 1})"
    return str(text)


def _remote_object_text(obj: dict) -> str:
    """A console argument as text (CDP RemoteObject)."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("description") or obj.get("type", ""))


class Browser:
    """One headless Chromium with one page; a context manager that cleans up after itself."""

    def __init__(self, executable: str | None = None, timeout: float = 30) -> None:
        executable = executable or find_chromium()  # first: nothing to clean up if missing
        self.timeout = timeout
        self._closed = False
        self._errors: list[str] = []
        self.dialogs: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._load_waiters: dict[str, asyncio.Future] = {}
        self._loaded: set[str] = set()  # loader ids whose load event came before we waited
        self._tasks: set[asyncio.Task] = set()
        self._proc: subprocess.Popen | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="liveml-chromium-"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._launch(executable)
            self._run(self._connect(self._page_ws_url()))
            for domain in ("Page", "Runtime", "Log", "DOM"):
                self._send(f"{domain}.enable")
            # Lifecycle events carry the loader id, so `open` waits for *its* load, not a stale one.
            self._send("Page.setLifecycleEventsEnabled", enabled=True)
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _launch(self, executable: str) -> None:
        profile = self._tmp / "profile"
        args = [
            executable,
            "--headless",
            "--no-sandbox",  # required as root (and in most containers)
            "--disable-gpu",
            "--disable-dev-shm-usage",  # small /dev/shm in containers crashes tabs otherwise
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--mute-audio",
            "--window-size=1280,900",
            "about:blank",
        ]
        # Its own session (process group), so close() can end Chromium and all its children.
        with open(self._tmp / "chromium.log", "wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _log_tail(self) -> str:
        try:
            text = (self._tmp / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-15:])

    def _page_ws_url(self) -> str:
        """Wait for DevToolsActivePort, then the websocket URL of the page target."""
        port_file = self._tmp / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Chromium exited with {self._proc.returncode} at start:\n{self._log_tail()}"
                )
            try:
                port = int(port_file.read_text().split()[0])
                with NO_PROXY.open(f"http://127.0.0.1:{port}/json", timeout=5) as r:
                    targets = json.load(r)
                for t in targets:
                    if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                        return t["webSocketDebuggerUrl"]
            except (OSError, ValueError, IndexError):
                pass  # not written / not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Chromium gave no page target within {self.timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Disconnect, kill Chromium's process group and delete the profile (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._disconnect(), timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        if self._proc is not None:
            # SIGKILL the whole group: the Debian launcher is a shell that does not exec, and a
            # throwaway profile needs no graceful shutdown. The unreaped leader keeps the group
            # id from being reused until wait() below.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- the CDP connection (runs on the loop thread) --------------------------------------

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=(timeout or self.timeout) + 5)
        except TimeoutError:
            future.cancel()
            raise

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        # No size limit: screenshots and big evaluate results exceed aiohttp's 4 MiB default.
        self._ws = await self._session.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(msg.data))
        finally:
            # Chromium died or the socket closed: nobody waiting should hang until the timeout.
            for fut in [*self._pending.values(), *self._load_waiters.values()]:
                if not fut.done():
                    fut.set_exception(BrowserError("connection to Chromium closed"))

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            fut = self._pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(BrowserError(f"CDP error: {msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
            return
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self._errors.append(_describe_exception(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self._errors.append(
                "console.error: " + " ".join(_remote_object_text(a) for a in params["args"])
            )
        elif method == "Log.entryAdded":
            entry = params["entry"]
            # Network entries ("Failed to load resource: ... 415") are expected whenever a test
            # provokes an HTTP error on purpose; they are not page errors.
            if entry.get("level") == "error" and entry.get("source") != "network":
                self._errors.append(f"{entry.get('source')}: {entry.get('text')}")
        elif method == "Page.lifecycleEvent" and params.get("name") == "load":
            fut = self._load_waiters.get(params.get("loaderId"))
            if fut is None:
                self._loaded.add(params.get("loaderId"))
            elif not fut.done():
                fut.set_result(None)
        elif method == "Page.javascriptDialogOpening":
            # An alert() would block the page (and every evaluate) until answered.
            self.dialogs.append(params.get("message", ""))
            task = asyncio.ensure_future(
                self._command("Page.handleJavaScriptDialog", {"accept": True})
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _command(self, method: str, params: dict) -> dict:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut = self._loop.create_future()
        self._pending[msg_id] = fut
        try:
            await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise TimeoutError(f"CDP {method} got no answer within {self.timeout}s") from None
        finally:
            self._pending.pop(msg_id, None)

    async def _navigate(self, url: str) -> None:
        result = await self._command("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        loader = result.get("loaderId")
        if not loader:
            return  # same-document navigation (only the #fragment changed): nothing loads
        if loader in self._loaded:
            return
        fut = self._load_waiters.setdefault(loader, self._loop.create_future())
        try:
            await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise TimeoutError(f"{url} did not finish loading within {self.timeout}s") from None
        finally:
            self._load_waiters.pop(loader, None)

    # -- public API ------------------------------------------------------------------------

    def _send(self, method: str, **params: Any) -> dict:
        """Send one CDP command and return its result (raises BrowserError on a CDP error)."""
        return self._run(self._command(method, params))

    def open(self, url: str) -> None:
        """Navigate to `url` and wait for its load event."""
        self._run(self._navigate(url))

    def evaluate(self, expression: str) -> Any:
        """Value of a JS expression (promises awaited); BrowserError with the JS error text."""
        result = self._send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            details = _describe_exception(result["exceptionDetails"])
            raise BrowserError(f"JavaScript error in {expression!r}: {details}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll `expression` until truthy and return its value; TimeoutError says what the page
        was doing (body data-state, #error text, last JS error of the expression)."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except BrowserError as exc:
                last_error = str(exc)  # e.g. the element does not exist yet: keep polling
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            state = self.evaluate(
                "JSON.stringify({state: document.body && document.body.dataset.state,"
                " error: (document.getElementById('error') || {}).textContent})"
            )
        except BrowserError as exc:
            state = f"(page state unknown: {exc})"
        msg = f"timed out after {timeout}s waiting for {expression!r}; page: {state}"
        if last_error:
            msg += f"; last error: {last_error}"
        if self._errors:
            msg += f"; console errors: {self._errors}"
        raise TimeoutError(msg)

    def set_files(self, selector: str, paths: list[str | Path]) -> None:
        """Choose files in the `<input type=file>` matching `selector` (fires input/change)."""
        root = self._send("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self._send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        files = [str(Path(p).resolve()) for p in paths]
        for f in files:
            if not Path(f).is_file():
                raise FileNotFoundError(f)
        self._send("DOM.setFileInputFiles", nodeId=node, files=files)

    def screenshot(self, path: str | Path | None = None) -> bytes:
        """A PNG of the viewport (written to `path` when given): handy when a test fails."""
        import base64

        png = base64.b64decode(self._send("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png

    @property
    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and non-network error log entries."""
        return list(self._errors)
