"""Where pages come from and how they become documents: live, archive replay, or record.

Contract
--------
* :meth:`Web.get` answers a URL from the network (``live``), from the archive only
  (``archive:PATH``; a URL not in it is an error, nothing goes out), or from the network
  while saving every response into the archive (``record:PATH``). The guard's URL check
  (scheme, domain lists, private addresses) applies in every mode.
* :meth:`Web.open` turns a response into a :class:`WebPage`: HTML through the fast
  extractor, re-rendered in Chromium when ``engine=chromium`` or when ``engine=auto``
  and the page looks script-built; PDFs through pypdf; plain text and JSON as they are.
  Invisible characters are stripped and the document says so.
* :meth:`Web.search` asks the configured provider.

One :class:`Web` per distinct settings is shared process-wide (:func:`web_for`), so the
HTTP connection pool and the Chromium process are reused across calls and sessions.
Not covered: per-session cookies or logins.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from llmos_apps.browser.archive import Archive, SearchHit
from llmos_apps.browser.chromium import shared_chromium
from llmos_apps.browser.config import BrowserSettings
from llmos_apps.browser.extract import decode_html, html_to_markdown, needs_javascript, paginate, pdf_to_text
from llmos_apps.browser.fetch import Fetcher, FetchError, Response, is_text_type
from llmos_apps.browser.guard import BlockedURL, clean_text
from llmos_apps.browser.search import choose_provider, trusted_endpoints
from llmos_apps.browser.warc import WarcArchive


@dataclass
class WebPage:
    url: str
    final_url: str
    title: str
    text: str
    pages: list[str]
    links: list[tuple[str, str]] = field(default_factory=list)
    engine: str = "httpx"
    notes: list[str] = field(default_factory=list)  # truncation, removed characters


class Web:
    def __init__(self, settings: BrowserSettings) -> None:
        self.settings = settings
        self.fetcher = Fetcher(settings)
        # search endpoints the user configured (a local SearXNG) are trusted for search only
        self.search_fetcher = Fetcher(settings, trusted_endpoints(settings))
        self.archive: Archive | None = None
        if settings.archive_path.endswith((".warc", ".warc.gz")):
            if settings.mode == "record":
                raise ValueError("record mode writes a folder archive, not a WARC file")
            self.archive = WarcArchive(settings.archive_path)
        elif settings.mode != "live":
            self.archive = Archive(settings.archive_path, create=settings.mode == "record")

    def get(self, url: str) -> Response:
        if self.settings.mode == "archive":
            assert self.archive is not None
            try:
                self.fetcher.guard.check_url(url)
            except BlockedURL as exc:
                raise FetchError(f"blocked: {exc}") from None
            response = self.archive.get(url)
            if response is None:
                raise FetchError(f"{url} is not in the web archive at {self.settings.archive_path} (offline mode)")
            return response
        response = self.fetcher.get(url)
        if self.archive is not None:
            self.archive.put(response)
        return response

    def open(self, url: str) -> WebPage:
        response = self.get(url)
        if response.status >= 400:
            raise FetchError(f"HTTP {response.status} for {response.final_url}")
        notes = [f"page cut at {self.settings.max_bytes:,} bytes"] if response.truncated else []
        engine = "httpx"
        links: list[tuple[str, str]] = []
        if response.is_pdf:
            try:
                title, text = pdf_to_text(response.body)
            except ValueError as exc:
                raise FetchError(str(exc)) from None
        elif response.content_type in ("text/html", "application/xhtml+xml"):
            html = decode_html(response.body, response.charset)
            wanted = self.settings.engine
            extracted = html_to_markdown(html, response.final_url) if wanted != "chromium" else None
            if extracted is None or (wanted == "auto" and needs_javascript(html, extracted)):
                try:
                    html, final = shared_chromium().render(url, self.get, response, self.settings.timeout_s)
                    extracted, engine = html_to_markdown(html, final), "chromium"
                except FetchError as exc:
                    if extracted is None:  # engine=chromium was asked for: no silent downgrade
                        raise
                    notes.append(f"the page seems to need JavaScript, but Chromium failed ({exc})")
            title, text, links = extracted.title, extracted.text, extracted.links
        elif is_text_type(response.content_type):
            title, text = "", decode_html(response.body, response.charset)
        else:
            raise FetchError(f"cannot read {response.content_type} content at {response.final_url}")
        text, removed = clean_text(text)
        title, _ = clean_text(title)
        if removed:
            notes.append(removed)
        unseen = [(t, u) for t, u in links if f"]({u})" not in text]  # context is RAM: no link twice
        if unseen:
            text += "\n\n## Links\n\n" + "\n".join(f"- [{t}]({u})" for t, u in unseen[:60])
        pages = paginate(text, self.settings.page_chars)
        return WebPage(url, response.final_url, title, text, pages, links, engine, notes)

    def search(self, query: str, limit: int) -> tuple[str, list[SearchHit]]:
        provider = choose_provider(self.settings, self.search_fetcher, self.archive)
        return provider.name, provider.search(query, limit)

    def close(self) -> None:
        self.fetcher.close()
        self.search_fetcher.close()


MAX_WEBS = 16
_WEBS: dict[BrowserSettings, Web] = {}
_WEBS_LOCK = threading.Lock()


def web_for(settings: BrowserSettings) -> Web:
    with _WEBS_LOCK:
        if settings not in _WEBS:
            if len(_WEBS) >= MAX_WEBS:  # settings rarely change; drop the oldest connection pools
                _WEBS.pop(next(iter(_WEBS))).close()
            _WEBS[settings] = Web(settings)
        return _WEBS[settings]


def close_all() -> None:
    with _WEBS_LOCK:
        for web in _WEBS.values():
            web.close()
        _WEBS.clear()
