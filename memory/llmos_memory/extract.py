"""Plain text from files: text, Markdown, HTML and PDF.

Contract
--------
* :func:`extract_file` returns ``(title, text, kind)`` for a file, choosing the reader
  by suffix (``.html``/``.htm``, ``.pdf``, everything else read as UTF-8 text). A file
  that looks binary, a PDF that cannot be read, or a missing file raises
  :class:`ExtractError` with a message that names the file; nothing is half-read.
* :func:`html_to_text` keeps the readable text of a page: scripts, styles and other
  invisible elements are dropped, block elements become paragraph breaks, and the
  ``<title>`` is returned separately. It uses only the standard library.
* PDF text comes from ``pypdf`` (the ``memory`` extra), imported only when a PDF is read;
  each PDF page becomes at least one paragraph.

Not covered: OCR of scanned PDFs, Office formats, reading order of multi-column layouts,
and JavaScript-rendered pages (the browser app hands over the rendered HTML instead).
"""

from __future__ import annotations

import html.parser
import re
from pathlib import Path

from llmos_errors import LlmosError

TEXT_SUFFIXES = {".html": "html", ".htm": "html", ".xhtml": "html", ".pdf": "pdf"}
_MAX_FILE_BYTES = 200 * 1024 * 1024  # larger than any document worth paging in; likely a mistake
_INVISIBLE = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip


class ExtractError(LlmosError, ValueError):
    """A file could not be turned into text (missing, binary, unreadable PDF)."""


def extract_file(path: str | Path) -> tuple[str, str, str]:
    """``(title, text, kind)`` of the file at ``path``; kind is ``"text"``, ``"markdown"``, ``"html"`` or ``"pdf"``."""
    path = Path(path)
    if not path.is_file():
        raise ExtractError(f"cannot ingest {str(path)!r}: no such file")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise ExtractError(f"cannot ingest {str(path)!r}: larger than {_MAX_FILE_BYTES // 2**20} MiB")
    kind = TEXT_SUFFIXES.get(path.suffix.lower(), "markdown" if path.suffix.lower() in {".md", ".markdown"} else "text")
    data = path.read_bytes()
    if kind == "pdf":
        return path.name, pdf_to_text(data, path.name), kind
    if b"\x00" in data[:8192]:
        raise ExtractError(f"cannot ingest {str(path)!r}: it looks like a binary file, not text")
    text = data.decode("utf-8", errors="replace")
    if kind == "html":
        title, text = html_to_text(text)
        return title or path.name, text, kind
    return path.name, text, kind


class _TextParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.hidden_depth = 0  # inside <script>, <style>, ...
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _INVISIBLE:
            self.hidden_depth += 1
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:  # <br/>, <hr/>
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _INVISIBLE:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.hidden_depth:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    """``(title, readable text)`` of an HTML document."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]*\n[ \t\r\f\v]*", "\n", text)  # trim around line breaks
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = " ".join("".join(parser.title).split())
    return title, text


def pdf_to_text(data: bytes, name: str = "document.pdf") -> str:
    """The text layer of a PDF, one paragraph per page at least."""
    return "\n\n".join(p for p in read_pdf(data, name)[1] if p)


def read_pdf(data: bytes, name: str = "document.pdf", max_pages: int | None = None) -> tuple[str, list[str]]:
    """``(title, text of each page)`` of a PDF (the first ``max_pages``); :class:`ExtractError`
    (a ``ValueError``) when it cannot be read. The one PDF reader of llmos (store and browser)."""
    try:
        import io

        import pypdf
    except ImportError as exc:  # an optional dependency: say how to get it
        raise ExtractError(f"cannot read {name!r}: PDF support needs pypdf (pip install 'llmos[memory]')") from exc
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractError(f"cannot read {name!r}: the PDF is encrypted")
        pages = [(page.extract_text() or "").strip() for page in reader.pages[:max_pages]]
        title = str(reader.metadata.get("/Title") or "") if reader.metadata else ""
    except ExtractError:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files; all mean the same to the caller
        raise ExtractError(f"cannot read {name!r}: not a readable PDF ({type(exc).__name__}: {exc})") from exc
    return title, pages
