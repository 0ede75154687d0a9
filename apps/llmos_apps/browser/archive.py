"""An offline web archive: a folder of saved responses keyed by URL, with a JSON index.

Format (``llmos-web-archive/1``)::

    ARCHIVE/
      index.json          {"format": "llmos-web-archive/1", "description": "...",
                           "pages": {URL: ENTRY, ...}}
      pages/...           the saved bodies, byte for byte as they were served

    ENTRY = {"file": "pages/scale-ai.html",     # path relative to ARCHIVE
             "content_type": "text/html",       # MIME type without parameters
             "charset": "utf-8" | null,
             "status": 200,
             "final_url": URL,                  # after redirects (same as the key if none)
             "recorded": "2025-06-01T12:00:00Z",
             "title": "...", "keywords": "..."} # optional; help the archive search provider

Keys are normalised (lower-case scheme and host, no fragment, no default port, ``/`` for
an empty path); a lookup also tries the key with and without a trailing slash.

Contract: :meth:`Archive.get` returns exactly the bytes :meth:`Archive.put` saved (record
mode), so a replayed page extracts to the same text. Writes are atomic (the index is
replaced, never edited in place) and serialised by a lock. :meth:`Archive.search` ranks
entries by the query's words in title, keywords, URL and extracted text.

Not covered: WARC files (export a WARC to this layout first), several versions of one URL
(the last write wins), and request headers (every entry is a plain GET).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmos_memory import STOPWORDS

from llmos_apps.browser.extract import decode_html, html_to_markdown, pdf_to_text
from llmos_apps.browser.fetch import Response, is_text_type

FORMAT = "llmos-web-archive/1"
WORDS = re.compile(r"[a-z0-9][a-z0-9.\-]*[a-z0-9]|[a-z0-9]", re.I)
EXTENSIONS = {"text/html": ".html", "application/pdf": ".pdf", "application/json": ".json", "text/plain": ".txt"}


@dataclass
class SearchHit:
    title: str
    url: str
    snippet: str


def normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def query_terms(text: str) -> list[str]:
    return [w for w in WORDS.findall(text.lower()) if w not in STOPWORDS]


class Archive:
    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.lock = threading.Lock()
        self.texts: dict[str, tuple[str, str]] = {}  # url -> (title, text), built for search
        index = self.root / "index.json"
        if not index.exists():
            if not create:
                raise FileNotFoundError(f"no web archive at {self.root} (expected {index})")
            self.pages: dict[str, dict] = {}
            self.description = ""
            return
        data = json.loads(index.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{index}: format is {data.get('format')!r}, expected {FORMAT!r}")
        self.description = data.get("description", "")
        self.pages = {normalize_url(url): entry for url, entry in data.get("pages", {}).items()}

    def entry(self, url: str) -> dict | None:
        key = normalize_url(url)
        alternative = key[:-1] if key.endswith("/") else key + "/"
        return self.pages.get(key) or self.pages.get(alternative)

    def get(self, url: str) -> Response | None:
        entry = self.entry(url)
        if entry is None:
            return None
        body = (self.root / entry["file"]).read_bytes()
        final = entry.get("final_url") or url
        return Response(url, final, int(entry.get("status", 200)), entry["content_type"], body, entry.get("charset"))

    def put(self, response: Response) -> None:
        """Save a response under its requested and its final URL."""
        key = normalize_url(response.final_url)
        name = hashlib.sha256(key.encode()).hexdigest()[:20] + EXTENSIONS.get(response.content_type, ".bin")
        entry: dict[str, Any] = {
            "file": f"pages/{name}",
            "content_type": response.content_type,
            "charset": response.charset,
            "status": response.status,
            "final_url": response.final_url,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self.lock:
            (self.root / "pages").mkdir(parents=True, exist_ok=True)
            _atomic_write(self.root / entry["file"], response.body)
            self.pages[key] = entry
            self.pages[normalize_url(response.url)] = entry
            self.texts.pop(key, None)
            index = {"format": FORMAT, "description": self.description, "pages": self.pages}
            _atomic_write(self.root / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())

    def _title_and_text(self, url: str, entry: dict) -> tuple[str, str]:
        if url not in self.texts:
            response = self.get(url)
            title, text = entry.get("title", ""), ""
            if response is not None and response.is_pdf:
                try:
                    pdf_title, text = pdf_to_text(response.body)
                    title = title or pdf_title
                except ValueError:
                    pass
            elif response is not None and is_text_type(response.content_type):
                extracted = html_to_markdown(decode_html(response.body, response.charset), url)
                title, text = title or extracted.title, extracted.text
            self.texts[url] = (title, text)
        return self.texts[url]

    def search(self, query: str, limit: int = 5) -> list[SearchHit]:
        terms = query_terms(query)
        if not terms:
            return []
        scored: list[tuple[float, str, str, str]] = []
        seen_files: set[str] = set()
        for url, entry in self.pages.items():
            if entry["file"] in seen_files or not (200 <= int(entry.get("status", 200)) < 300):
                continue  # a redirect's source and target share one file: list it once
            seen_files.add(entry["file"])
            final = entry.get("final_url") or url
            title, text = self._title_and_text(url, entry)
            head, body = f"{title} {entry.get('keywords', '')} {final}".lower(), text.lower()
            score = sum(3.0 * (t in head) + min(body.count(t), 5) * 0.2 for t in terms)
            matched = sum(1 for t in terms if t in head or t in body)
            if matched * 2 >= len(terms) and score > 0:
                scored.append((score, final, title, _snippet(text, terms)))
        scored.sort(key=lambda item: -item[0])
        return [SearchHit(title or url, url, snippet) for _, url, title, snippet in scored[:limit]]


def _snippet(text: str, terms: list[str], width: int = 240) -> str:
    for block in text.split("\n\n"):
        if not block.startswith(("#", "|", "Table:")) and any(t in block.lower() for t in terms):
            return block[:width].replace("\n", " ")
    return text[:width].replace("\n", " ")


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
