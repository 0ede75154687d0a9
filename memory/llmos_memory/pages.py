"""Split a document's text into pages of a few hundred tokens.

Contract
--------
* :func:`split_pages` cuts text into pages of at most about ``page_tokens`` tokens,
  as counted by a caller-supplied ``count_tokens`` (the model's tokenizer). It cuts at
  paragraph boundaries first, then sentences, then words, and only as a last resort
  inside a word (a base64 blob, a minified line), so no text is ever dropped.
* Page budgets are packed greedily from the token counts of the pieces; the count
  recorded for each page is ``count_tokens`` of the page's final text, so it is exact
  even where joining two pieces tokenizes differently.
* Whitespace inside a paragraph is kept; runs of blank lines between paragraphs become
  one blank line.

Not covered: semantic chunking, overlap between pages, tokenizers that need the text's
position in the context (pages are counted on their own).
"""

from __future__ import annotations

import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

DEFAULT_PAGE_TOKENS = 400

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_WORD = re.compile(r"\S+\s*")
# Words too common to search by: the one list of llmos (the page store and the browser's archive).
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "how", "in", "is", "it",
    "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "what", "will", "with",
])  # fmt: skip


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters per token, as for English BPE vocabularies."""
    return (len(text) + 3) // 4


def split_pages(
    text: str, count_tokens: TokenCounter = estimate_tokens, page_tokens: int = DEFAULT_PAGE_TOKENS
) -> list[tuple[str, int]]:
    """Cut ``text`` into pages; returns ``[(page_text, n_tokens), ...]`` in reading order.

    An empty or whitespace-only text gives no pages.
    """
    if page_tokens < 8:
        raise ValueError(f"page_tokens must be at least 8, got {page_tokens}")
    pages: list[tuple[str, int]] = []
    current: list[str] = []
    current_tokens = 0
    for piece, joiner, tokens in _pieces(text, count_tokens, page_tokens):
        if current and current_tokens + tokens > page_tokens:
            pages.append(_finish(current, count_tokens))
            current, current_tokens = [], 0
        current.append((joiner if current else "") + piece)
        current_tokens += tokens
    if current:
        pages.append(_finish(current, count_tokens))
    return pages


def _finish(parts: list[str], count_tokens: TokenCounter) -> tuple[str, int]:
    page = "".join(parts).strip()
    return page, count_tokens(page)


def _pieces(text: str, count_tokens: TokenCounter, limit: int) -> list[tuple[str, str, int]]:
    """(piece, joiner, tokens) units no bigger than ``limit``: paragraphs, else sentences, else words."""
    pieces: list[tuple[str, str, int]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = count_tokens(paragraph)
        if tokens <= limit:
            pieces.append((paragraph, "\n\n", tokens))
            continue
        joiner = "\n\n"  # the first piece of a paragraph starts a new paragraph
        for sentence in _SENTENCE_END.split(paragraph):
            for part in _fit(sentence, count_tokens, limit):
                pieces.append((part, joiner, count_tokens(part)))
                joiner = " "
    return pieces


def _fit(sentence: str, count_tokens: TokenCounter, limit: int) -> list[str]:
    """Cut one over-long sentence at word boundaries, and a word that alone is too big by characters."""
    if count_tokens(sentence) <= limit:
        return [sentence]
    parts: list[str] = []
    current = ""
    for word in _WORD.findall(sentence):
        if current and count_tokens(current + word) > limit:
            parts.append(current.strip())
            current = ""
        if count_tokens(word) > limit:
            parts.extend(_hard_cut(word.strip(), count_tokens, limit))
            continue
        current += word
    if current.strip():
        parts.append(current.strip())
    return parts


def _hard_cut(word: str, count_tokens: TokenCounter, limit: int) -> list[str]:
    """Cut a single huge word into chunks of at most ``limit`` tokens (halving the chunk size until it fits)."""
    size = max(1, len(word) * limit // max(1, count_tokens(word)))
    while size > 1 and count_tokens(word[:size]) > limit:
        size //= 2
    return [word[i : i + size] for i in range(0, len(word), size)]


def recall_hint(text: str, words: int = 6) -> str:
    """A short query that finds this page again: its first few content words, safe inside quotes."""
    found = [w for w in re.findall(r"\w+", text[:2000]) if w.lower() not in STOPWORDS]
    return " ".join(found[:words])
