"""The JavaScript engine: one headless Chromium, driven by Playwright, reused across calls.

Contract
--------
* :meth:`Chromium.render` loads a URL in a tab and returns ``(html after scripts ran, final
  url)``. Tabs are kept warm and reused (a new tab costs a renderer process, ~0.4 s);
  a tab goes to ``about:blank`` after each call and cookies are cleared whenever no call
  is in flight. Local storage of sites persists for the life of the process.
* Chromium never touches the network itself. Every request it makes is intercepted and
  answered by ``fetch(url)``, the same guarded fetcher (or archive) the fast path uses,
  so the address guard, size caps, archive replay and record mode apply to scripts and
  XHRs as well. Its own DNS is switched off (``--host-resolver-rules``) as a second wall,
  and images, media, fonts and non-GET requests are not loaded at all.
* One browser process (:func:`shared_chromium`) runs in one background thread with its own asyncio loop, so calls
  from any thread, and several at once, share it. It starts on first use, is restarted
  if it dies, and is closed at interpreter exit.
* "Done" means: the ``load`` event fired and no intercepted request has been in flight
  for a short quiet period (bounded by the timeout), which is tighter than Playwright's
  fixed 500 ms ``networkidle``.

Uses Debian's ``chromium`` (``/usr/bin/chromium``, or ``LLMOS_CHROMIUM``); never
``playwright install``. Not covered: clicking, forms, scrolling for lazy content, screenshots.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmos_apps.browser.fetch import FetchError, Response

LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
]  # fmt: skip
SKIPPED_RESOURCES = {"image", "media", "font", "websocket", "manifest", "texttrack", "eventsource", "ping", "other"}
QUIET_S = 0.03  # no request in flight for this long after `load` means the page settled


MAX_IDLE_PAGES = 4


@dataclass
class _Job:
    url: str
    fetch: Callable[[str], Response]
    first: Response | None
    in_flight: int = 0


def chromium_path() -> str:
    return os.environ.get("LLMOS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


class Chromium:
    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or chromium_path()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.playwright: Any = None
        self.browser: Any = None
        self.context: Any = None
        self.idle_pages: list[Any] = []
        self.jobs: dict[Any, _Job] = {}  # tab -> the render it is doing
        self.tasks: set[asyncio.Task[None]] = set()  # tab recycling in the background
        self.start_lock = threading.Lock()

    def render(
        self, url: str, fetch: Callable[[str], Response], first: Response | None = None, timeout_s: float = 15.0
    ) -> tuple[str, str]:
        """HTML of ``url`` after its scripts ran. ``fetch`` answers every request the page
        makes; ``first``, if given, answers the main one (it was fetched already)."""
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._render(url, fetch, first, timeout_s), loop)
        try:
            return future.result(timeout_s + 5)
        except TimeoutError:
            future.cancel()
            raise FetchError(f"Chromium timed out rendering {url}") from None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self.start_lock:
            if self.loop is None:
                if not os.path.exists(self.executable):
                    raise FetchError(f"Chromium is not installed at {self.executable} (apt-get install chromium)")
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, name="llmos-chromium", daemon=True)
                self.thread.start()
                atexit.register(self.close)
        return self.loop

    async def _context(self) -> Any:
        if self.context is not None and self.browser.is_connected():
            return self.context
        from playwright.async_api import async_playwright  # lazy: heavy, and only JS pages need it

        if self.playwright is None:
            self.playwright = await async_playwright().start()
        self.browser = await self.playwright.chromium.launch(
            executable_path=self.executable, headless=True, args=LAUNCH_ARGS
        )
        self.context = await self.browser.new_context(service_workers="block", accept_downloads=False)
        self.idle_pages = []
        return self.context

    async def _page(self) -> Any:
        """A warm tab: reused, because a new tab costs a renderer process (~0.4 s)."""
        context = await self._context()
        if self.idle_pages:
            return self.idle_pages.pop()
        page = await context.new_page()
        await page.route("**/*", lambda route: self._answer(page, route))
        return page

    async def _answer(self, page: Any, route: Any) -> None:
        job = self.jobs.get(page)
        request = route.request
        if job is None or request.resource_type in SKIPPED_RESOURCES or request.method != "GET":
            await route.abort("blockedbyclient")  # an idle tab, or something never loaded
            return
        job.in_flight += 1
        try:
            if job.first is not None and request.url == job.url and request.is_navigation_request():
                response, job.first = job.first, None
            else:
                response = await asyncio.get_running_loop().run_in_executor(None, job.fetch, request.url)
            charset = f"; charset={response.charset}" if response.charset else ""
            headers = {"content-type": response.content_type + charset}
            await route.fulfill(status=response.status, headers=headers, body=response.body)
        except FetchError:
            await route.abort("blockedbyclient")
        finally:
            job.in_flight -= 1

    async def _render(
        self, url: str, fetch: Callable[[str], Response], first: Response | None, timeout_s: float
    ) -> tuple[str, str]:
        page = await self._page()
        job = self.jobs[page] = _Job(url, fetch, first)
        loop = asyncio.get_running_loop()
        try:
            try:
                await page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            except Exception as exc:  # playwright's errors carry the reason in the message
                raise FetchError(f"Chromium could not load {url}: {str(exc).splitlines()[0]}") from None
            deadline = loop.time() + min(timeout_s, 5.0)
            quiet_since = loop.time()
            while loop.time() < deadline:  # settle: no intercepted request for QUIET_S
                await asyncio.sleep(0.005)
                if job.in_flight:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= QUIET_S:
                    break
            return await page.content(), page.url
        finally:
            # recycling happens after the caller has its answer
            self.tasks.add(task := loop.create_task(self._recycle(page)))
            task.add_done_callback(self.tasks.discard)

    async def _recycle(self, page: Any) -> None:
        """Blank the tab (stops its scripts) and keep it warm for the next call."""
        try:
            await page.goto("about:blank", timeout=5000)
            reusable = len(self.idle_pages) < MAX_IDLE_PAGES
        except Exception:  # a tab that cannot even blank itself is not worth keeping
            reusable = False
        self.jobs.pop(page, None)
        if reusable:
            self.idle_pages.append(page)
        else:
            with contextlib.suppress(Exception):
                await page.close()
        if not self.jobs and self.context is not None:  # nothing in flight: forget what the sites stored
            with contextlib.suppress(Exception):  # the browser may be closing
                await self.context.clear_cookies()

    def close(self) -> None:
        if self.loop is None:
            return
        loop, self.loop = self.loop, None

        async def shutdown() -> None:
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=5)
            if self.browser is not None:
                await self.browser.close()
            if self.playwright is not None:
                await self.playwright.stop()
            self.browser = self.playwright = self.context = None

        with contextlib.suppress(Exception):  # at exit a dead browser is fine: the process is going away
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            self.thread.join(5)


_SHARED: Chromium | None = None
_SHARED_LOCK = threading.Lock()


def shared_chromium() -> Chromium:
    """The one Chromium of this process (started lazily on first render)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Chromium()
        return _SHARED
