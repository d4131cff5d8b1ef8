"""Headless Chromium for tests: a small synchronous helper over playwright driving Debian's
chromium (`executable_path`, so no `playwright install` and no browser download).

    with Browser() as b:
        b.open("http://127.0.0.1:8000/")
        b.wait_for("document.body.dataset.state === 'ready'")
        b.set_files("#defects-file", [path])
        assert b.console_errors == []

Playwright's sync API marks its asyncio loop as running in the thread that uses it, which
would break any test calling `asyncio.run` afterwards; so each Browser drives playwright
from a private worker thread and its methods hand calls to it. Tests import it as
`from browser import Browser` (pyproject puts tests/ on pytest's pythonpath).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium (apt-get install -y chromium); `make test` does this"
# Loopback must never go through an http_proxy from the environment; a small /dev/shm in
# containers crashes tabs unless Chromium keeps its shared memory elsewhere.
ARGS = ["--no-proxy-server", "--disable-dev-shm-usage", "--mute-audio"]
VIEWPORT = (1280, 900)
T = TypeVar("T")


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
    """Navigation failed, an element is missing, or JavaScript threw in an expression."""


class Browser:
    """One headless Chromium with one page; a context manager that cleans up after itself.

    `console_errors` collects uncaught exceptions and console.error/assert calls, `dialogs`
    the messages of alert()/confirm() (accepted at once, so the page never blocks), and
    `requests` every URL the page requested.
    """

    def __init__(
        self,
        executable: str | None = None,
        timeout: float = 30,
        viewport: tuple[int, int] = VIEWPORT,
    ) -> None:
        executable = executable or find_chromium()  # first: nothing to clean up if missing
        self.timeout = timeout
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self._errors: list[str] = []
        self._closed = False
        self._playwright = self._browser = self.page = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        try:
            self._call(lambda: self._start(executable, viewport))
        except BaseException:
            self.close()
            raise

    def _start(self, executable: str, viewport: tuple[int, int]) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=executable, headless=True, args=ARGS, timeout=self.timeout * 1000
        )
        page = self.page = self._browser.new_page(
            viewport={"width": viewport[0], "height": viewport[1]}
        )
        page.set_default_timeout(self.timeout * 1000)
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self._errors.append(f"{e.name}: {e.message}"))
        page.on("dialog", self._on_dialog)
        page.on("request", lambda r: self.requests.append(r.url))

    def _on_console(self, msg: Any) -> None:
        # "Failed to load resource: ... 415" is expected whenever a test provokes an HTTP
        # error on purpose; it is a network entry, not a page error.
        if msg.type in ("error", "assert") and not msg.text.startswith("Failed to load resource"):
            self._errors.append(f"console.{msg.type}: {msg.text}")

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the playwright thread and return its result (or raise its error)."""
        if self._closed:
            raise BrowserError("the browser is closed")
        return self._worker.submit(fn).result()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close Chromium (playwright ends its process group and deletes the temporary
        profile) and the playwright driver; idempotent."""
        if self._closed:
            return

        def stop() -> None:
            try:
                if self._browser is not None:
                    self._browser.close()
            finally:
                if self._playwright is not None:
                    self._playwright.stop()

        try:
            self._worker.submit(stop).result(timeout=60)
        finally:
            self._closed = True
            self._worker.shutdown(wait=True)

    # -- public API ------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate to `url` and wait for its load event."""
        from playwright.sync_api import Error
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        def goto() -> None:
            try:
                self.page.goto(url, wait_until="load")
            except Error as e:
                if not isinstance(e, PlaywrightTimeout):
                    self._await_error_page()
                raise

        try:
            self._call(goto)
        except PlaywrightTimeout:
            raise TimeoutError(f"{url} did not finish loading within {self.timeout}s") from None
        except Error as e:
            raise BrowserError(f"could not open {url}: {e.message}") from None

    def _await_error_page(self) -> None:
        """After a failed navigation Chromium commits its error page a moment later, which
        would interrupt the next `open`: wait for it (at most 5 s) so the page is settled."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        if self.page.main_frame.url.startswith("chrome-error://"):
            return
        with contextlib.suppress(PlaywrightTimeout):
            self.page.wait_for_event(
                "framenavigated",
                predicate=lambda frame: frame.url.startswith("chrome-error://"),
                timeout=5000,
            )

    def evaluate(self, expression: str) -> Any:
        """Value of a JS expression (promises awaited); BrowserError with the JS error text."""
        from playwright.sync_api import Error

        try:
            return self._call(lambda: self.page.evaluate(expression))
        except Error as e:
            raise BrowserError(f"JavaScript error in {expression!r}: {e.message}") from None

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
        files = [Path(p).resolve() for p in paths]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f)

        def choose() -> bool:
            element = self.page.query_selector(selector)
            if element is None:
                return False
            element.set_input_files(files)
            return True

        if not self._call(choose):
            raise BrowserError(f"no element matches {selector!r}")

    def box(self, selector: str) -> dict | None:
        """The bounding box {x, y, width, height} of the first element matching `selector`
        (page coordinates of the viewport), None when nothing matches or it is not shown."""

        def find() -> dict | None:
            element = self.page.query_selector(selector)
            return None if element is None else element.bounding_box()

        return self._call(find)

    def screenshot(
        self, path: str | Path | None = None, selector: str | None = None, full_page: bool = False
    ) -> bytes:
        """A PNG of the viewport, the whole page or one element (written to `path` when given):
        handy when a test fails, and the README's pictures."""

        def shoot() -> bytes:
            if selector is not None:
                return self.page.locator(selector).first.screenshot(path=path)
            return self.page.screenshot(path=path, full_page=full_page)

        return self._call(shoot)

    @property
    def console_errors(self) -> list[str]:
        """Uncaught exceptions and console.error/assert calls (not failed network loads)."""
        return list(self._errors)
