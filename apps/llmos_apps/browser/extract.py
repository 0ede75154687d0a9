"""Readable text from fetched bytes: HTML to Markdown, PDF to text, and paging.

Contract
--------
* :func:`html_to_markdown` keeps the main content only: it drops scripts, styles, forms,
  navigation, headers and footers outside the article, asides, cookie/share/newsletter
  boxes and *hidden* elements (``hidden``, ``aria-hidden``, ``display:none``: text a
  reader cannot see is a classic place to hide instructions for a model).
* Tables become Markdown tables: the caption as a ``Table:`` line above, the first row
  (or ``<thead>``) as the header, ``colspan`` honoured. Links inside cells show their
  text only: a funding table's round and investor links were a third of its tokens and
  pushed each row's figures apart. Links in prose are kept as ``[text](absolute url)``.
  Every link, in cells or prose, is listed with its absolute URL in
  :attr:`Extracted.links` (the browser lists the ones the text does not show after the
  page, so they can still be opened).
* :func:`pdf_to_text` uses pypdf; :func:`paginate` splits text at block boundaries into
  pages of at most ``page_chars`` characters (a single longer block is cut at lines).

Parsing uses selectolax's lexbor engine (a C HTML5 parser), so a 300 KB page takes a few
milliseconds. Not covered: images (alt text is not read), forms, and frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from llmos_memory import read_pdf
from selectolax.lexbor import LexborHTMLParser, LexborNode

DROP = (
    "script, style, noscript, template, svg, canvas, iframe, object, embed, form, button, input, select, textarea, "
    "dialog, menu, aside, [hidden], [aria-hidden=true], [role=navigation], [role=banner], [role=contentinfo], "
    "[role=complementary], [role=dialog]"
)
BOILERPLATE = re.compile(
    r"(^|[\s_-])(nav|navbar|menu|breadcrumbs?|sidebar|footer|cookie|consent|banner|newsletter|subscribe|share|"
    r"social|related|promo|advert|ads?|popup|modal|comments?)($|[\s_-])",
    re.I,
)
INVISIBLE_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
BLOCKS = {
    "p", "div", "section", "article", "main", "blockquote", "pre", "ul", "ol", "li", "table", "figure",
    "figcaption", "dl", "dt", "dd", "hr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "header", "address",
    "details", "summary", "body", "html", "center", "tr", "td", "th", "caption", "thead", "tbody", "tfoot",
}  # fmt: skip
MAX_DEPTH = 150  # deeper nesting is flattened to text: no recursion blow-up on hostile pages


@dataclass
class Extracted:
    title: str
    text: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, absolute url)


def collapse(text: str) -> str:
    """Collapse whitespace runs to one space, keeping an edge space (it separates inline runs).

    ``str.split`` runs in C; a ``\\s+`` regex here was most of the extraction time.
    """
    core = " ".join(text.split())
    if not core:
        return " " if text else ""
    return (" " if text[0].isspace() else "") + core + (" " if text[-1].isspace() else "")


def decode_html(body: bytes, charset: str | None) -> str:
    if not charset:
        match = re.search(rb"<meta[^>]+charset=[\"']?([\w-]+)", body[:4096], re.I)
        charset = match.group(1).decode("ascii") if match else "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def needs_javascript(html: str, extracted: Extracted) -> bool:
    """Heuristic for ``engine=auto``: almost no text, but scripts that would write some."""
    if len(extracted.text) >= 300:
        return False
    lowered = html.lower()
    return "<script" in lowered or "enable javascript" in lowered


def html_to_markdown(html: str, base_url: str) -> Extracted:
    tree = LexborHTMLParser(html)
    title = _title(tree)
    for node in tree.css(DROP):
        node.decompose()
    for node in tree.css("[style], [class], [id]"):
        hidden = INVISIBLE_STYLE.search(node.attributes.get("style") or "")
        if hidden or (node.tag not in ("body", "html", "main", "article") and _is_boilerplate(node)):
            node.decompose()
    root = _main_content(tree)
    writer = _Writer(base_url)
    if root is not None:
        for node in root.css("nav, footer"):
            node.decompose()
        writer.blocks(root, 0)
    text = "\n\n".join(b for b in writer.out if b.strip())
    return Extracted(title=title, text=text, links=writer.links)


def _title(tree: LexborHTMLParser) -> str:
    node = tree.css_first("title") or tree.css_first("h1")
    return collapse(node.text()).strip() if node else ""


def _is_boilerplate(node: LexborNode) -> bool:
    names = f"{node.attributes.get('class') or ''} {node.attributes.get('id') or ''}"
    return bool(BOILERPLATE.search(names))


def _main_content(tree: LexborHTMLParser) -> LexborNode | None:
    # the page's own declaration of its main content wins; then the biggest article
    articles = tree.css("article")
    if articles:
        return max(articles, key=lambda n: len(n.text()))
    for selector in ("main", "[role=main]", "#content", "#main"):
        node = tree.css_first(selector)
        if node is not None:
            return node
    body = tree.body or tree.root
    if body is None:
        return None
    for node in body.css("header, nav, footer"):  # without an article, site chrome goes
        node.decompose()
    return body


def _children(node: LexborNode):  # type: ignore[no-untyped-def]
    child = node.child
    while child is not None:
        yield child
        child = child.next


class _Writer:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.out: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.in_cell = False  # inside a table cell: links show their text only

    def link(self, node: LexborNode, text: str) -> str:
        href = (node.attributes.get("href") or "").strip()
        url = urljoin(self.base_url, href) if href else ""
        if not text or not url.startswith(("http://", "https://")):
            return text
        if url not in self.seen:
            self.seen.add(url)
            self.links.append((text, url))
        return text if self.in_cell else f"[{text}]({url})"

    def inline(self, node: LexborNode, depth: int) -> str:
        """Text of an inline run, Markdown-marked, whitespace collapsed."""
        if node.tag == "-text":
            return collapse(node.text_content or "")
        if node.tag in ("-comment", "img") or not node.is_element_node:
            return ""
        if depth > MAX_DEPTH:
            return collapse(node.text())
        inner = "".join(self.inline(c, depth + 1) for c in _children(node))
        tag = node.tag
        if tag == "br":
            return "\n"
        stripped = inner.strip()
        if tag == "a":
            return self.link(node, stripped) if stripped else ""
        if tag in ("strong", "b") and stripped:
            return f"**{stripped}**"
        if tag in ("em", "i") and stripped:
            return f"*{stripped}*"
        if tag == "code" and stripped:
            return f"`{stripped}`"
        return inner

    def blocks(self, node: LexborNode, depth: int) -> None:
        run: list[str] = []
        for child in _children(node):
            if child.tag in BLOCKS and depth <= MAX_DEPTH:
                self._flush(run)
                self.block(child, depth + 1)
            else:
                run.append(self.inline(child, depth + 1))
        self._flush(run)

    def _flush(self, run: list[str]) -> None:
        text = "".join(run)
        text = "\n".join(line.strip() for line in text.split("\n")).strip() if "\n" in text else text.strip()
        if text:
            self.out.append(text)
        run.clear()

    def block(self, node: LexborNode, depth: int) -> None:
        tag = node.tag
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            text = self.inline(node, depth).strip()
            if text:
                self.out.append("#" * int(tag[1]) + " " + text.replace("\n", " "))
        elif tag == "table":
            self.out.append(self.table(node, depth))
        elif tag in ("ul", "ol"):
            self.out.append("\n".join(self.list_items(node, depth, 0)))
        elif tag == "pre":
            self.out.append("```\n" + node.text().strip("\n") + "\n```")
        elif tag == "hr":
            self.out.append("---")
        elif tag == "blockquote":
            start = len(self.out)
            self.blocks(node, depth)
            quoted = "\n\n".join(self.out[start:])
            del self.out[start:]
            self.out.append("\n".join("> " + line for line in quoted.split("\n")))
        else:
            self.blocks(node, depth)

    def list_items(self, node: LexborNode, depth: int, level: int) -> list[str]:
        lines: list[str] = []
        number = 0
        for item in _children(node):
            if item.tag != "li":
                continue
            number += 1
            marker = f"{number}." if node.tag == "ol" else "-"
            text_parts, nested = [], []
            for child in _children(item):
                if child.tag in ("ul", "ol") and level < 6:
                    nested.extend(self.list_items(child, depth + 1, level + 1))
                else:
                    text_parts.append(self.inline(child, depth + 1))
            text = collapse("".join(text_parts)).strip()
            lines.append("  " * level + f"{marker} {text}")
            lines.extend(nested)
        return lines

    def table(self, node: LexborNode, depth: int) -> str:
        caption_node = node.css_first("caption")
        caption = collapse(self.inline(caption_node, depth)).strip() if caption_node else ""
        rows: list[list[str]] = []
        header_rows = 0
        for row in node.css("tr"):
            cells: list[str] = []
            for cell in _children(row):
                if cell.tag not in ("td", "th"):
                    continue
                outer, self.in_cell = self.in_cell, True
                try:
                    text = collapse(self.inline(cell, depth + 1)).strip().replace("|", "\\|")
                finally:
                    self.in_cell = outer
                span = _int(cell.attributes.get("colspan"), 1)
                cells.extend([text] + [""] * (span - 1))
            if cells:
                in_head = row.parent is not None and row.parent.tag == "thead"
                all_th = all(c.tag == "th" for c in _children(row) if c.tag in ("td", "th"))
                if len(rows) == header_rows and (in_head or all_th):
                    header_rows += 1
                rows.append(cells)
        if not rows:
            return ""
        width = max(len(r) for r in rows)
        rows = [r + [""] * (width - len(r)) for r in rows]
        header, body = rows[0], rows[max(header_rows, 1) :]
        lines = [f"Table: {caption}"] if caption else []
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * width)
        lines.extend("| " + " | ".join(r) + " |" for r in body)
        return "\n".join(lines)


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, min(int(value or default), 50))
    except ValueError:
        return default


def pdf_to_text(body: bytes, max_pages: int = 300) -> tuple[str, str]:
    """(title, text) of a PDF with a ``[PDF page N]`` line before each page; raises ``ValueError``
    (``llmos_memory.ExtractError``) when it cannot be read."""
    title, pages = read_pdf(body, "the PDF", max_pages)
    return title, "\n\n".join(f"[PDF page {i + 1}]\n{p}" for i, p in enumerate(pages) if p)


def paginate(text: str, page_chars: int) -> list[str]:
    """Split at blank lines into pages of at most ``page_chars``; never returns an empty list."""
    pages: list[str] = []
    current = ""
    for block in _pieces(text, page_chars):
        if current and len(current) + 2 + len(block) > page_chars:
            pages.append(current)
            current = block
        else:
            current = f"{current}\n\n{block}" if current else block
    pages.append(current)
    return pages


def _pieces(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    for block in text.split("\n\n"):
        while len(block) > limit:  # a huge block (a long table) is cut at a line, else hard
            cut = block.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            pieces.append(block[:cut])
            block = block[cut:].lstrip("\n")
        pieces.append(block)
    return pieces
