"""Invented web sites read through the real apps, so training text is what the kernel feeds.

Contract: a :class:`World` is a throwaway web archive (``llmos-web-archive/1``) in a
temporary folder. Tasks add HTML pages (:meth:`World.add`), then :meth:`World.call`
runs a real tool (``search`` and ``open`` from the browser app in archive mode, the
calculator) and returns its :class:`~llmos_tools.ToolResult`, whose text, trust and
source become the result turn the model trains on. :func:`tool_specs` gives the specs
the kernel renders for a set of tools, from the real registry.

Not covered: tools with side effects (python, imagegen: their outputs are predicted by
the tasks, and tests compare them with the real apps), live web modes.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

FORMAT = "llmos-web-archive/1"


@lru_cache(maxsize=1)
def _registry():
    from llmos_tools import load_tools

    return load_tools(use_cache=False)


def tool_specs(names: list[str] | None = None) -> list[dict[str, Any]]:
    """The specs the kernel renders for these tools (all of them when ``None``), in that order."""
    registry = _registry().only(names)
    return [tool.spec() for tool in registry.tools.values()]


def all_tool_names() -> list[str]:
    return [name for name in _registry().tools if name not in ("mcp",)]


class World:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="llmos-tiny-web-"))
        (self.root / "pages").mkdir()
        self.pages: dict[str, dict[str, Any]] = {}
        self._published = False
        self._session = 0

    def add(self, url: str, page_html: str, title: str, keywords: str = "") -> None:
        name = f"pages/{len(self.pages)}.html"
        (self.root / name).write_text(page_html, encoding="utf-8")
        self.pages[url] = {"file": name, "content_type": "text/html", "charset": "utf-8", "status": 200,
                           "final_url": url, "recorded": "2025-06-30T00:00:00Z", "title": title,
                           "keywords": keywords}  # fmt: skip
        self._published = False

    def publish(self) -> None:
        from llmos_apps.browser.archive import Archive
        from llmos_apps.browser.config import BrowserSettings
        from llmos_apps.browser.web import web_for

        index = {"format": FORMAT, "description": "invented pages for llmos-tiny", "pages": self.pages}
        (self.root / "index.json").write_text(json.dumps(index), encoding="utf-8")
        # The browser keeps one Web per settings (creating one costs ~0.2 s of TLS set-up), and
        # its archive reads index.json once: give the cached Web a fresh view of the archive.
        web_for(BrowserSettings.from_settings(self.settings)).archive = Archive(self.root)
        self._published = True

    @property
    def settings(self) -> dict[str, str]:
        return {"web": f"archive:{self.root}"}

    def reset(self) -> None:
        """Forget every page (the next task starts from an empty web)."""
        for file in (self.root / "pages").iterdir():
            file.unlink()
        self.pages.clear()
        self._published = False

    def call(self, tool: str, **arguments: Any):
        """Run a real tool against this world's archive; tool errors come back as error results."""
        from llmos_tools import ToolContext, ToolError, ToolResult

        if not self._published:
            self.publish()
        self._session += 1
        context = ToolContext(session_id=f"tiny-{id(self)}-{self._session}", settings=self.settings)
        try:
            return _registry().tools[tool].run(arguments, context)
        except ToolError as exc:
            return ToolResult(text=f"error: {exc}", is_error=True)

    def close(self) -> None:
        from llmos_apps.browser.web import close_all

        close_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def article(title: str, paragraphs: list[str], site: str) -> str:
    """A plain article page with the usual clutter around it (the extractor drops it)."""
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)} - {site}</title></head>"
        f"<body><nav><a href='/'>Home</a> <a href='/about'>About</a></nav><main><article>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</article></main>"
        f"<footer><p>&copy; {site}. <a href='/privacy'>Privacy</a></p></footer></body></html>"
    )
