"""The memory app: the model's way back to pages that were paged out of RAM.

Tools
-----
* ``recall(query)``: BM25 search over the store; returns the best pages in full and a
  one-line pointer to a few more.
* ``open_page(document, page)``: one page by document id and 1-based page number, as
  named in the stubs the page table leaves in RAM.

Contract: results are always :attr:`Trust.UNTRUSTED` (pages come from files, the web and
tool outputs) with ``source`` set to where the text came from; ``data`` carries the page
ids, numbers and sources for programs, and ``page_ins`` names the pages for the kernel. Bad
input (no words in the query, a page that does not exist) is a :class:`ToolError` that says
what exists. The store is the one the kernel lends (``ToolContext.memory``: the session's
paged memory); outside a session, ``ToolContext.settings["memory_db"]`` or ``memory.sqlite``
under ``ToolContext.workdir``, created empty if missing. Settings
``memory_recall_pages`` (default 2) and ``memory_recall_more`` (default 3) size results.

Not covered: ingest (the kernel and the browser app write pages), and deciding what to
page in (the kernel does that with the page table).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmos_memory import Page, PageNotFound, Store, StoreError
from llmos_tools import StoredPage, ToolContext, ToolError, ToolResult, Trust, hookimpl, tool


def store_path(context: ToolContext) -> Path:
    configured = context.settings.get("memory_db")
    return Path(configured) if configured else Path(context.workdir) / "memory.sqlite"


@contextlib.contextmanager
def _store(context: ToolContext) -> Iterator[Store]:
    """The store the kernel lent (left open: it is the session's), or one opened for this call."""
    if context.memory is not None:
        yield context.memory
        return
    with Store(store_path(context)) as store:
        yield store


def _stored(page: Page) -> StoredPage:
    return StoredPage(page.document_id, page.number, page.title, page.n_tokens)


def _describe(page: Page) -> dict[str, Any]:
    return {
        "page_id": page.id,
        "document": page.document_id,
        "page": page.number,
        "title": page.title,
        "source": page.source,
        "trust": page.trust,
        "n_tokens": page.n_tokens,
    }


def _heading(page: Page) -> str:
    return f"page {page.number} of {page.title} (document {page.document_id}, source {page.source})"


@tool
def recall(query: str, context: ToolContext) -> ToolResult:
    """Search everything llmos has read (files, web pages, tool outputs) and return the best matching pages.

    Args:
        query: words the page should contain, e.g. "vault code word"
    """
    full = int(context.settings.get("memory_recall_pages", 2))
    more = int(context.settings.get("memory_recall_more", 3))
    with _store(context) as store:
        try:
            hits = store.search(query, limit=full + more)
        except StoreError as exc:
            raise ToolError(str(exc)) from exc
        if not hits:
            return ToolResult(f"no stored page matches {query!r}", trust=Trust.UNTRUSTED, source="memory")
        shown = hits[:full]
        store.touch([hit.page.id for hit in shown])
    parts = [f"{_heading(hit.page)}, score {hit.score:.2f}:\n{hit.page.text}" for hit in shown]
    if hits[full:]:
        lines = [
            f"- {_heading(hit.page)}: {' '.join(hit.snippet.split())} -> "
            f"open_page(document={hit.page.document_id}, page={hit.page.number})"
            for hit in hits[full:]
        ]
        parts.append("more matches:\n" + "\n".join(lines))
    sources = list(dict.fromkeys(hit.page.source for hit in shown))
    return ToolResult(
        "\n\n".join(parts),
        trust=Trust.UNTRUSTED,
        source="; ".join(sources),
        data={"pages": [_describe(hit.page) | {"score": hit.score} for hit in hits], "shown": len(shown)},
        page_ins=tuple(_stored(hit.page) for hit in hits),
    )


@tool
def open_page(document: int, page: int, context: ToolContext) -> ToolResult:
    """Open one stored page by document id and page number (as named in a paged-out stub).

    Args:
        document: the document id, e.g. 3
        page: the page number, starting at 1
    """
    with _store(context) as store:
        try:
            found = store.page(document, page)
        except PageNotFound as exc:
            raise ToolError(str(exc)) from exc
        n_pages = store.document(document).n_pages
        store.touch([found.id])
    return ToolResult(
        f"{_heading(found)}, {n_pages} pages in all:\n{found.text}",
        trust=Trust.UNTRUSTED,
        source=found.source,
        data={"pages": [_describe(found)], "shown": 1},
        page_ins=(_stored(found),),
    )


@hookimpl
def register_tools(register: Any) -> None:
    register(recall)
    register(open_page)
