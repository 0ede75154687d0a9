"""Pages the model has read, handed to the code it runs: ``read_page`` and ``page_tables``.

Contract
--------
* The host writes the documents with :func:`write` (source -> text, oldest first) into
  ``.llmos/documents.json`` of a sandbox's working folder before each cell; the folder is
  hidden, so the files are never taken for the cell's own output. A link the kernel
  planted there (``.llmos`` or the file) is removed, never followed.
* Code in the kernel calls :func:`read_page` for a page's text and :func:`page_tables`
  for its Markdown tables as pandas DataFrames (the browser renders HTML tables as
  Markdown). Without a source, both take the last web page (``http(s)://`` source) read.
  A source is matched exactly, then as a prefix (``https://example.com/a`` finds
  ``https://example.com/a?b=1``); an unknown one raises ``KeyError`` naming the sources
  there are, so the model can read the message and try again.
* Cells are cleaned of Markdown links and images (``[Seed](https://…)`` -> ``Seed``)
  and emphasis; escaped pipes (``\\|``) stay inside their cell. A row shorter than the
  header is padded with empty strings, a longer one cut.

Why: retyping a page's table into code is the copying a small model gets wrong
(a skipped or doubled row spoils the whole table, docs/llmos-tiny.md); a program that
reads the page the kernel already fetched does not. The text is as untrusted as it was
in the context: the sandbox's isolation is what keeps code that reads it in check.

Not covered: HTML tables the browser did not render as Markdown, merged cells, tables
inside code blocks, pages the model has not read in this session.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE = Path(".llmos") / "documents.json"

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(\S(?:.*?\S)?)\1")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_PIPE = re.compile(r"(?<!\\)\|")


def write(folder: str | Path, documents: Mapping[str, str]) -> Path:
    """Save ``documents`` (source -> text, oldest first) where kernel code reads them."""
    path = Path(folder) / FILE
    for link in (path.parent, path):  # the kernel owns the folder: never follow a link it planted
        if link.is_symlink():
            link.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o644), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(list(documents.items())))
    return path


def _load(folder: str | Path | None) -> list[tuple[str, str]]:
    path = Path(folder or ".") / FILE
    if not path.exists():
        return []
    return [(source, text) for source, text in json.loads(path.read_text(encoding="utf-8"))]


def read_page(source: str | None = None, *, folder: str | Path | None = None) -> str:
    """The text of a page read this session (by URL); the last web page read when ``source`` is None."""
    documents = _load(folder)
    if source is None:
        web = [text for src, text in documents if src.startswith(("http://", "https://"))]
        if not web:
            raise KeyError("no web page has been read in this session yet")
        return web[-1]
    for match in (lambda s: s == source, lambda s: s.startswith(source)):
        found = [text for src, text in documents if match(src)]
        if found:
            return found[-1]
    known = ", ".join(src for src, _ in documents[-10:]) or "none"
    raise KeyError(f"no page read from {source!r}; the pages read are: {known}")


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in ``text`` as (header, rows) of cleaned cell strings."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and _SEPARATOR.match(lines[i + 1].strip()):
            header = _cells(lines[i])
            rows: list[list[str]] = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                row = _cells(lines[i])
                rows.append((row + [""] * len(header))[: len(header)])
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [_clean(cell) for cell in _PIPE.split(line)]


def _clean(cell: str) -> str:
    cell = _LINK.sub(r"\1", cell.strip())
    cell = _EMPHASIS.sub(r"\2", cell)
    return cell.replace("\\|", "|").strip()


def page_tables(source: str | None = None, *, folder: str | Path | None = None) -> list[Any]:
    """The Markdown tables of a page read this session, as pandas DataFrames of strings."""
    import pandas as pd

    text = read_page(source, folder=folder)
    return [pd.DataFrame(rows, columns=_unique(header)) for header, rows in markdown_tables(text)]


def _unique(header: list[str]) -> list[str]:
    """Column names as pandas needs them: blanks named, repeats numbered."""
    seen: dict[str, int] = {}
    names = []
    for position, name in enumerate(header):
        name = name or f"column {position + 1}"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names
