"""The disk: documents and their pages in SQLite (WAL) with a full-text (FTS5, BM25) index.

Contract
--------
* One file holds documents, their pages, an FTS5 index over page text and saved KV
  states keyed by (page, model). The schema version lives in ``PRAGMA user_version``
  and :data:`MIGRATIONS` brings older files forward when a store is opened; a file
  newer than this code is refused, never rewritten.
* A document and all its pages are written in one transaction: after a crash (even
  ``kill -9`` mid-ingest) a document is either complete or absent. WAL with
  ``synchronous=NORMAL`` makes committed data survive a process crash; a power cut may
  lose the last transactions but never corrupts the file.
* Ingest never loses what is already stored: bad input (missing or binary file,
  unreadable PDF, empty text, bad trust label) raises before anything is written.
  Ingesting the same text from the same source twice returns the existing document.
* :meth:`Store.search` ranks pages with BM25: pages with every query word first, then
  pages with some of them, with bounds that keep it fast at a million pages (see its
  docstring). Query words are matched as whole words, case- and accent-folded, not
  stemmed; FTS5 query syntax in the query is not interpreted, so any string is a valid
  query.
* Page numbers start at 1, as in a book. Token counts are those of the ``count_tokens``
  the store was opened with at ingest time.
* A :class:`Store` may be shared between threads (calls are serialised by a lock);
  several processes may open the same file.

Not covered: embedding search, deleting single pages, and tokens of a different model
than the one that counted them (the kernel recounts when it pages text in).
"""

from __future__ import annotations

import array
import hashlib
import itertools
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmos_memory.extract import extract_file, html_to_text
from llmos_memory.migrations import StoreError, migrate, use_wal
from llmos_memory.pages import DEFAULT_PAGE_TOKENS, STOPWORDS, TokenCounter, estimate_tokens, split_pages

TRUST_LEVELS = ("trusted", "untrusted")
MAX_QUERY_TERMS = 16
# Search cost: FTS5's BM25 reads every query word's whole page list (about 0.3 us a page), then
# scores each matching page (about 8 us). These bounds keep one search near 20 ms at a million pages.
COMMON_FRACTION = 0.005  # a word in more of the pages than this is treated as a stopword
RARE_PAGES = 2000  # words in at most this many pages may rank alone or in pairs
MAX_PAIR_TERMS = 4  # at most 6 pairs in the pair stage

# Each migration is a list of statements run in one transaction; index i brings version i to i + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL DEFAULT 'text',
            trust TEXT NOT NULL CHECK (trust IN ('trusted', 'untrusted')),
            sha256 TEXT NOT NULL,
            n_pages INTEGER NOT NULL,
            n_tokens INTEGER NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX documents_by_source ON documents (source, sha256)",
        """CREATE TABLE pages (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            text TEXT NOT NULL,
            n_tokens INTEGER NOT NULL,
            last_used REAL NOT NULL DEFAULT 0,
            pins INTEGER NOT NULL DEFAULT 0,
            UNIQUE (document_id, number)
        )""",
        # External-content index: the text lives once, in pages; triggers keep the index in step.
        "CREATE VIRTUAL TABLE pages_fts USING fts5 (text, content='pages', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')",
        "CREATE TRIGGER pages_ai AFTER INSERT ON pages BEGIN "
        "INSERT INTO pages_fts (rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER pages_ad AFTER DELETE ON pages BEGIN "
        "INSERT INTO pages_fts (pages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
        "CREATE TRIGGER pages_au AFTER UPDATE OF text ON pages BEGIN "
        "INSERT INTO pages_fts (pages_fts, rowid, text) VALUES ('delete', old.id, old.text); "
        "INSERT INTO pages_fts (rowid, text) VALUES (new.id, new.text); END",
        """CREATE TABLE kv_states (
            page_id INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            n_tokens INTEGER NOT NULL,
            data BLOB NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (page_id, model)
        )""",
    ],
    [  # swap keeps what a page-in needs (its tokens, where it sat); pins were never used
        "ALTER TABLE kv_states ADD COLUMN tokens BLOB NOT NULL DEFAULT x''",
        "ALTER TABLE kv_states ADD COLUMN start INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX kv_states_created ON kv_states (created)",
        "ALTER TABLE pages DROP COLUMN pins",
    ],
]


class PageNotFound(StoreError, KeyError):
    """No such document or page; the message says what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Document:
    id: int
    source: str
    title: str
    kind: str
    trust: str
    n_pages: int
    n_tokens: int
    sha256: str
    created: float


@dataclass(frozen=True)
class Page:
    id: int
    document_id: int
    number: int  # 1-based position in its document
    text: str
    n_tokens: int
    source: str  # provenance: where the text came from (path, URL, "tool:browser")
    trust: str  # "trusted" or "untrusted"
    title: str
    last_used: float


@dataclass(frozen=True)
class KVState:
    """A span's KV cells as the model saved them, the tokens they hold, and where they sat."""

    data: bytes
    tokens: tuple[int, ...]
    start: int = 0  # context position of the first token when saved


@dataclass(frozen=True)
class Hit:
    page: Page
    score: float  # BM25, higher is better
    snippet: str  # matched words in [brackets]


_PAGE_COLUMNS = "p.id, p.document_id, p.number, p.text, p.n_tokens, d.source, d.trust, d.title, p.last_used"


def _page(row: Sequence) -> Page:
    return Page(*row[:9])


def query_terms(query: str) -> list[str]:
    """The words of ``query`` worth searching for: lower-cased, unique, stopwords dropped when others remain.

    Words are split as the index splits them: letters and digits, with ``_`` and punctuation as separators.
    """
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]+", query)))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_QUERY_TERMS]


class Store:
    """Documents, pages and the full-text index in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        count_tokens: TokenCounter = estimate_tokens,
        page_tokens: int = DEFAULT_PAGE_TOKENS,
    ) -> None:
        self.path = Path(path)
        self.count_tokens = count_tokens
        self.page_tokens = page_tokens
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            use_wal(self._db)
            for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "cache_size=-65536"):
                self._db.execute(f"PRAGMA {pragma}")
            migrate(self._db, MIGRATIONS, self.path)
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- ingest ----------------------------------------------------------------------------------

    def add_text(
        self, text: str, source: str, *, title: str = "", trust: str = "untrusted", kind: str = "text"
    ) -> Document:
        """Store ``text`` as one document split into pages; ``source`` says where it came from."""
        trust = str(trust)
        if trust not in TRUST_LEVELS:
            raise StoreError(f"trust must be one of {TRUST_LEVELS}, got {trust!r}")
        if not isinstance(text, str):
            raise StoreError(f"text must be a string, got {type(text).__name__}")
        if not source:
            raise StoreError("every document needs a source (a path, a URL, 'tool:NAME', 'user')")
        pages = split_pages(text, self.count_tokens, self.page_tokens)
        if not pages:
            raise StoreError(f"nothing to ingest from {source!r}: the text is empty")
        sha = hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT id FROM documents WHERE source = ? AND sha256 = ?", (source, sha)).fetchone()
            if row:  # the same text from the same place: already stored
                return self._document(row[0])
            cursor = db.execute(
                "INSERT INTO documents (source, title, kind, trust, sha256, n_pages, n_tokens, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (source, title or source, kind, trust, sha, len(pages), sum(n for _, n in pages), now),
            )
            document_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO pages (document_id, number, text, n_tokens) VALUES (?, ?, ?, ?)",
                [(document_id, number, page, n) for number, (page, n) in enumerate(pages, start=1)],
            )
            return self._document(document_id)

    def add_file(self, path: str | Path, *, trust: str = "untrusted", source: str = "") -> Document:
        """Ingest a text, Markdown, HTML or PDF file; the source defaults to its absolute path."""
        title, text, kind = extract_file(path)
        return self.add_text(text, source or str(Path(path).resolve()), title=title, trust=trust, kind=kind)

    def add_html(self, markup: str, source: str, *, trust: str = "untrusted") -> Document:
        """Ingest a web page's HTML (the browser app's rendered DOM); ``source`` is its URL."""
        title, text = html_to_text(markup)
        return self.add_text(text, source, title=title or source, trust=trust, kind="html")

    def delete_document(self, document_id: int) -> None:
        with self._write() as db:
            if not db.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount:
                raise PageNotFound(f"no document {document_id}")

    # -- reading ---------------------------------------------------------------------------------

    def _document(self, document_id: int) -> Document:
        row = self._db.execute(
            "SELECT id, source, title, kind, trust, n_pages, n_tokens, sha256, created FROM documents WHERE id = ?",
            (document_id,),
        ).fetchone()
        if row is None:
            raise PageNotFound(f"no document {document_id}")
        return Document(*row)

    def document(self, document_id: int) -> Document:
        with self._lock:
            return self._document(document_id)

    def documents(self, limit: int = 100, offset: int = 0) -> list[Document]:
        """Documents, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, title, kind, trust, n_pages, n_tokens, sha256, created FROM documents "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [Document(*row) for row in rows]

    def page(self, document_id: int, number: int) -> Page:
        """Page ``number`` (1-based) of a document; :class:`PageNotFound` says what exists if it does not."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_PAGE_COLUMNS} FROM pages p JOIN documents d ON d.id = p.document_id "
                "WHERE p.document_id = ? AND p.number = ?",
                (document_id, number),
            ).fetchone()
            if row is None:
                document = self._document(document_id)  # raises if the document is missing
                raise PageNotFound(
                    f"document {document_id} ({document.title}) has no page {number}; "
                    f"it has pages 1 to {document.n_pages}"
                )
        return _page(row)

    def pages(self, document_id: int) -> list[Page]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_PAGE_COLUMNS} FROM pages p JOIN documents d ON d.id = p.document_id "
                "WHERE p.document_id = ? ORDER BY p.number",
                (document_id,),
            ).fetchall()
        return [_page(row) for row in rows]

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        """The best ``limit`` pages for ``query`` by BM25; fewer when fewer match well.

        A word is *common* when more than :data:`COMMON_FRACTION` of pages (and over
        :data:`RARE_PAGES`) hold it. BM25 in FTS5 reads each query word's whole page list,
        so a common word would cost time in proportion to the store: common words only
        select, they never rank. Stages, each filling what the one before left:

        1. pages holding every query word (found unranked, then ranked by the selective words);
        2. pages holding every selective word;
        3. pages holding two of the rarest words (at most :data:`RARE_PAGES` pages each);
        4. pages holding one of those rare words, rarest first.

        Words no page contains are ignored. A query of common words only returns the newest
        pages holding them all, unranked (score 0).
        """
        terms = query_terms(query)
        if not terms:
            raise StoreError(f"nothing to search for in {query!r}: it has no words")
        limit = max(1, min(int(limit), 100))
        with self._lock:
            common = max(RARE_PAGES, int(self._page_count() * COMMON_FRACTION))
            frequency = {t: self._document_frequency(t, common + 1) for t in terms}
            known = sorted((t for t in terms if frequency[t]), key=frequency.__getitem__)  # rarest first
            if not known:
                return []
            selective = [t for t in known if frequency[t] <= common]
            if not selective:
                return self._match(" ".join(f'"{t}"' for t in known), limit, ranked=False)
            rare = [t for t in selective if frequency[t] <= RARE_PAGES][:MAX_PAIR_TERMS]
            selective_all = " ".join(f'"{t}"' for t in selective)  # \w words hold no quotes: no FTS5 syntax gets in
            # Pages holding every query word, common ones too, are the best matches; finding them
            # unranked is cheap (FTS5 skips through the lists), so they go first, ranked by the selective words.
            everything = self._rowids(" ".join(f'"{t}"' for t in known), limit + 1)
            stages = (
                [(selective_all, everything)] if 0 < len(everything) <= limit and len(known) > len(selective) else []
            )
            stages.append((selective_all, []))
            if len(rare) > 2:
                stages.append((" OR ".join(f'("{a}" "{b}")' for a, b in itertools.combinations(rare, 2)), []))
            if len(selective) > 1:
                stages += [(f'"{t}"', []) for t in rare]
            hits: list[Hit] = []
            for expression, only in stages:
                seen = {hit.page.id for hit in hits}
                found = self._match(expression, limit + len(hits), only=only)
                hits = (hits + [hit for hit in found if hit.page.id not in seen])[:limit]
                if len(hits) >= limit:
                    break
        return hits

    def _document_frequency(self, term: str, cap: int) -> int:
        """How many pages hold ``term``, counting no further than ``cap`` (counting costs time per page)."""
        row = self._db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM pages_fts WHERE pages_fts MATCH ? LIMIT ?)", (f'"{term}"', cap)
        ).fetchone()
        return int(row[0])

    def _page_count(self) -> int:
        # max(id) is an index lookup; count(*) would scan a million rows. Deleted pages make it an overestimate.
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM pages").fetchone()[0])

    def _rowids(self, expression: str, limit: int) -> list[int]:
        rows = self._db.execute("SELECT rowid FROM pages_fts WHERE pages_fts MATCH ? LIMIT ?", (expression, limit))
        return [int(row[0]) for row in rows]

    def _match(self, expression: str, limit: int, ranked: bool = True, only: Sequence[int] = ()) -> list[Hit]:
        # The inner query lets FTS5 order and stop at the limit before the join and the snippets.
        order = "rank" if ranked else "rowid DESC"
        rowid_filter = f" AND rowid IN ({','.join(str(int(i)) for i in only)})" if only else ""  # ints: safe inline
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_PAGE_COLUMNS}, top.score, top.snippet FROM ("
                f"  SELECT rowid, {'rank' if ranked else '0.0'} AS score,"
                "   snippet(pages_fts, 0, '[', ']', '…', 16) AS snippet FROM pages_fts"
                f"  WHERE pages_fts MATCH ?{rowid_filter} ORDER BY {order} LIMIT ?"
                ") AS top JOIN pages p ON p.id = top.rowid JOIN documents d ON d.id = p.document_id "
                f"ORDER BY top.{'score' if ranked else 'rowid DESC'}",
                (expression, limit),
            ).fetchall()
        return [Hit(_page(row), -float(row[9]), row[10]) for row in rows]

    def stats(self) -> dict[str, int]:
        with self._lock:
            documents, pages, tokens = self._db.execute(
                "SELECT count(*), coalesce(sum(n_pages), 0), coalesce(sum(n_tokens), 0) FROM documents"
            ).fetchone()
        return {"documents": documents, "pages": pages, "tokens": tokens}

    # -- page bookkeeping ------------------------------------------------------------------------

    def touch(self, page_ids: Sequence[int], when: float | None = None) -> None:
        """Record that pages were just used (recalled, opened, paged in)."""
        stamp = time.time() if when is None else when
        with self._write() as db:
            db.executemany("UPDATE pages SET last_used = ? WHERE id = ?", [(stamp, i) for i in page_ids])

    # -- saved KV states (swap) ------------------------------------------------------------------

    def save_kv(self, page_id: int, model: str, state: KVState, *, max_bytes: int | None = None) -> None:
        """Keep a page's evaluated KV state for ``model`` so paging it back in can skip prefill.

        With ``max_bytes``, the oldest states of that model are dropped until theirs fit.
        """
        tokens = array.array("i", state.tokens).tobytes()
        with self._write() as db:
            try:
                db.execute(
                    "INSERT OR REPLACE INTO kv_states (page_id, model, n_tokens, data, created, tokens, start) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (page_id, model, len(state.tokens), sqlite3.Binary(state.data), time.time(), tokens, state.start),
                )
            except sqlite3.IntegrityError as exc:
                raise PageNotFound(f"no page with id {page_id}") from exc
            if max_bytes is not None:
                _trim_kv(db, model, max_bytes)

    def load_kv(self, page_id: int, model: str) -> KVState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data, tokens, start FROM kv_states WHERE page_id = ? AND model = ?", (page_id, model)
            ).fetchone()
        if row is None:
            return None
        tokens = array.array("i")
        tokens.frombytes(row[1])
        return KVState(bytes(row[0]), tuple(tokens), int(row[2]))

    def has_kv(self, page_id: int, model: str) -> bool:
        with self._lock:
            query = "SELECT 1 FROM kv_states WHERE page_id = ? AND model = ?"
            return self._db.execute(query, (page_id, model)).fetchone() is not None

    def drop_kv(self, model: str | None = None, page_id: int | None = None) -> int:
        """Forget saved KV states (of one model, of one page, or all); returns how many were dropped."""
        clauses = [(c, v) for c, v in (("model = ?", model), ("page_id = ?", page_id)) if v is not None]
        where = " AND ".join(c for c, _ in clauses) or "1"
        with self._write() as db:
            return db.execute(f"DELETE FROM kv_states WHERE {where}", [v for _, v in clauses]).rowcount

    # -- maintenance -----------------------------------------------------------------------------

    def optimize(self) -> None:
        """Merge the full-text index into one segment (faster search after bulk ingest)."""
        with self._write() as db:
            db.execute("INSERT INTO pages_fts (pages_fts) VALUES ('optimize')")

    def check(self) -> None:
        """Raise :class:`StoreError` if the file or the full-text index is damaged."""
        with self._lock:
            result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise StoreError(f"{self.path} failed integrity_check: {result}")
            try:
                self._db.execute("INSERT INTO pages_fts (pages_fts, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: the full-text index does not match the pages: {exc}") from exc


def _trim_kv(db: sqlite3.Connection, model: str, max_bytes: int) -> None:
    """Drop the oldest saved states of ``model`` (never the newest) until they total ``max_bytes``."""
    rows = db.execute(
        "SELECT page_id, length(data) FROM kv_states WHERE model = ? ORDER BY created DESC, rowid DESC", (model,)
    ).fetchall()
    total = 0
    for index, (page_id, size) in enumerate(rows):
        total += size
        if index and total > max_bytes:
            db.execute("DELETE FROM kv_states WHERE page_id = ? AND model = ?", (page_id, model))
