"""llmos_memory: RAM and disk for llmos. A leaf package: it imports neither ``llmos`` nor ``llmos_tools``.

* :class:`Store`: documents and pages in SQLite (WAL) with BM25 full-text search.
* :func:`split_pages`: cut text into pages of a few hundred tokens.
* :class:`PageTable`: which spans sit in the context window, and what to evict.

Front door::

    from llmos_memory import Store, PageTable, PageRef
"""

from llmos_memory.extract import ExtractError, extract_file, html_to_text, pdf_to_text, read_pdf
from llmos_memory.pages import DEFAULT_PAGE_TOKENS, STOPWORDS, TokenCounter, estimate_tokens, recall_hint, split_pages
from llmos_memory.pagetable import AdmitPlan, Eviction, PageRef, PageTable, RamFull, RamSummary, Span, stub_text
from llmos_memory.store import MIGRATIONS, Document, Hit, KVState, Page, PageNotFound, Store, StoreError, query_terms

__all__ = [
    "DEFAULT_PAGE_TOKENS",
    "MIGRATIONS",
    "STOPWORDS",
    "AdmitPlan",
    "Document",
    "Eviction",
    "ExtractError",
    "Hit",
    "KVState",
    "Page",
    "PageNotFound",
    "PageRef",
    "PageTable",
    "RamFull",
    "RamSummary",
    "Span",
    "Store",
    "StoreError",
    "TokenCounter",
    "estimate_tokens",
    "extract_file",
    "html_to_text",
    "pdf_to_text",
    "query_terms",
    "read_pdf",
    "recall_hint",
    "split_pages",
    "stub_text",
]
