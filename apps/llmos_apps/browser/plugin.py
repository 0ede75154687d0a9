"""The browser's tools and its plugin hook: ``search``, ``open``, ``next_page``, ``find_text``.

Contract
--------
* ``open(url, page=1)`` fetches a page (see :mod:`.web`), keeps the extracted document for
  the session (``ToolContext.session_id``) and returns one page of it. Opening a URL the
  session already has reads from the kept copy, so ``open(url, page=3)`` jumps without a
  refetch. ``next_page()`` and ``find_text(text)`` read the session's current document.
* A fresh ``open`` also hands the whole extracted text to the kernel (``ToolResult.whole_text``,
  for its paged memory and for programs); ``data`` carries ``url``, ``title``, ``pages`` (a
  count), ``links`` and ``text`` for reports. The model sees one page.
* Every result is ``Trust.UNTRUSTED`` with the page's URL as ``source``: the text is
  whatever the site wrote. ``search`` and ``open`` declare ``Effect.NETWORK``; the other
  two only read what was already fetched.
* Failures the model can act on (blocked address, binary content, timeout, unknown page)
  come back as :class:`~llmos_tools.ToolError` with the reason.

The per-session cache is small and in-process (8 documents per session, 64 sessions,
least recently used dropped); the kernel's paged memory is the long-term store. Settings
are described in :mod:`.config`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llmos_tools import Effect, Tool, ToolContext, ToolError, ToolResult, Trust, hookimpl, tool

from llmos_apps.browser.config import BrowserSettings
from llmos_apps.browser.fetch import FetchError
from llmos_apps.browser.web import Web, WebPage, web_for

DOCS_PER_SESSION = 8
MAX_SESSIONS = 64
MAX_MATCHES = 12


class SessionDocuments:
    """session id -> recently opened documents (most recent last) and a reading cursor."""

    def __init__(self) -> None:
        self.sessions: OrderedDict[str, OrderedDict[str, tuple[WebPage, int]]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, session: str, doc: WebPage, page: int) -> None:
        with self.lock:
            docs = self.sessions.setdefault(session, OrderedDict())
            self.sessions.move_to_end(session)
            docs[doc.url] = (doc, page)
            docs.move_to_end(doc.url)
            while len(docs) > DOCS_PER_SESSION:
                docs.popitem(last=False)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)

    def get(self, session: str, url: str = "") -> tuple[WebPage, int] | None:
        with self.lock:
            docs = self.sessions.get(session)
            if not docs:
                return None
            if not url:
                return next(reversed(docs.values()))
            return docs.get(url) or next((v for v in docs.values() if v[0].final_url == url), None)


DOCUMENTS = SessionDocuments()


def _web(context: ToolContext) -> Web:
    try:
        return web_for(BrowserSettings.from_settings(context.settings))
    except (ValueError, OSError) as exc:
        raise ToolError(f"browser is misconfigured: {exc}") from None


def _normalize(url: str) -> str:
    url = url.strip()
    if (
        "://" not in url
        and not url.startswith(("file:", "about:", "javascript:", "data:"))
        and "." in url.split("/")[0]
    ):
        return "https://" + url  # models often write bare domains
    return url


def _page_result(doc: WebPage, page: int, whole: bool = False) -> ToolResult:
    """One page for the model; ``whole`` also hands the kernel the full text (``whole_text``),
    so the kernel can keep the document in paged memory."""
    total = len(doc.pages)
    header = [f"[web page, untrusted] {doc.title or doc.final_url}", f"URL: {doc.final_url}"]
    more = "Read on with next_page, or use find_text to search it." if page < total else "This is the last page."
    header.append(f"Page {page} of {total} ({doc.engine}). {more}")
    header.extend(f"Note: {note}." for note in doc.notes)
    data = {"url": doc.url, "final_url": doc.final_url, "title": doc.title, "page": page, "pages": total,
            "engine": doc.engine, "links": [list(link) for link in doc.links]}  # fmt: skip
    if whole:
        data["text"] = doc.text
    text = "\n".join(header) + "\n\n" + doc.pages[page - 1]
    whole_text = doc.text if whole else None
    return ToolResult(text=text, trust=Trust.UNTRUSTED, source=doc.final_url, data=data, whole_text=whole_text)


@tool(effects={Effect.NETWORK})
def search(query: str, context: ToolContext, max_results: int = 5) -> ToolResult:
    """Search the web and list matching pages (title, URL, snippet). Open one with open(url).

    Args:
        query: what to look for, in a few words
        max_results: how many results to list (1 to 20)
    """
    if not query.strip():
        raise ToolError("query is empty")
    if not 1 <= max_results <= 20:
        raise ToolError("max_results must be between 1 and 20")
    try:
        provider, hits = _web(context).search(query, max_results)
    except FetchError as exc:
        raise ToolError(f"search failed: {exc}") from None
    if not hits:
        text = f"No results for {query!r} ({provider})."
    else:
        lines = [f"Search results for {query!r} ({provider}, untrusted):"]
        for number, hit in enumerate(hits, 1):
            lines.append(f"{number}. {hit.title}\n   {hit.url}" + (f"\n   {hit.snippet}" if hit.snippet else ""))
        text = "\n".join(lines)
    data = [{"title": h.title, "url": h.url, "snippet": h.snippet} for h in hits]
    return ToolResult(text=text, trust=Trust.UNTRUSTED, source=f"search:{provider}", data=data)


@tool(effects={Effect.NETWORK}, name="open")
def open_page(url: str, context: ToolContext, page: int = 1) -> ToolResult:
    """Open a web page (or PDF) and read it as text; long pages come in numbered pages.

    Args:
        url: the address to open, e.g. https://example.com/article
        page: which page of the document to show (1 is the start)
    """
    url = _normalize(url)
    kept = DOCUMENTS.get(context.session_id, url)
    if kept is None:
        try:
            doc = _web(context).open(url)
        except FetchError as exc:
            raise ToolError(str(exc)) from None
    else:
        doc = kept[0]
    if not 1 <= page <= len(doc.pages):
        raise ToolError(f"page must be between 1 and {len(doc.pages)} for {doc.final_url}")
    DOCUMENTS.put(context.session_id, doc, page)
    return _page_result(doc, page, whole=kept is None)


@tool
def next_page(context: ToolContext) -> ToolResult:
    """Show the next page of the document opened last."""
    kept = DOCUMENTS.get(context.session_id)
    if kept is None:
        raise ToolError("no page is open yet: call open(url) first")
    doc, page = kept
    if page >= len(doc.pages):
        raise ToolError(f"that was the last page ({page} of {len(doc.pages)}) of {doc.final_url}")
    DOCUMENTS.put(context.session_id, doc, page + 1)
    return _page_result(doc, page + 1)


@tool
def find_text(text: str, context: ToolContext, url: str = "") -> ToolResult:
    """Find lines containing some text in the document opened last (or an opened URL), with page numbers.

    Args:
        text: the words to look for (case does not matter)
        url: an already opened page to search instead of the last one
    """
    needle = text.strip().lower()
    if not needle:
        raise ToolError("text is empty")
    kept = DOCUMENTS.get(context.session_id, _normalize(url) if url else "")
    if kept is None:
        raise ToolError(f"{url} has not been opened in this session" if url else "no page is open yet")
    doc = kept[0]
    matches: list[str] = []
    for number, content in enumerate(doc.pages, 1):
        lines = content.split("\n")
        for index, line in enumerate(lines):
            if needle in line.lower():
                before = lines[index - 1] if index and not line.startswith("|") else ""
                matches.append(f"page {number}: " + (f"{before}\n  " if before.strip() else "") + line)
                if len(matches) >= MAX_MATCHES:
                    break
        if len(matches) >= MAX_MATCHES:
            break
    if not matches:
        body = f"{text!r} does not occur in {doc.final_url}."
    else:
        body = f"{len(matches)} match(es) for {text!r} in {doc.final_url} (untrusted):\n" + "\n".join(matches)
    return ToolResult(text=body, trust=Trust.UNTRUSTED, source=doc.final_url, data={"matches": len(matches)})


TOOLS: list[Tool] = [search, open_page, next_page, find_text]


@hookimpl
def register_tools(register: Callable[[Tool], Any]) -> None:
    for each in TOOLS:
        register(each)
