"""Browser settings: read once per call from ``ToolContext.settings``, then the environment.

Each key is looked up in ``settings["browser"]`` (a dict), then in ``settings`` itself,
then in the environment variable named beside it, then the default. Settings come from
the user or the kernel, never from the model, so they may widen what the guard allows.

=================  ====================  ==========================================================
key                environment           meaning (default)
=================  ====================  ==========================================================
web                LLMOS_WEB             ``live``, ``archive:PATH`` (replay only) or ``record:PATH``
                                         (live, and save every response into PATH) (``live``);
                                         an archive PATH ending in .warc or .warc.gz is read as WARC
engine             LLMOS_BROWSER_ENGINE  ``auto`` (httpx, Chromium when a page needs JavaScript),
                                         ``httpx`` or ``chromium`` (``auto``)
search             LLMOS_SEARCH          ``auto``, ``searxng``, ``brave``, ``duckduckgo``, ``archive``
searxng_url        SEARXNG_URL           base URL of a SearXNG instance (none)
brave_url          BRAVE_SEARCH_URL      Brave API base (``https://api.search.brave.com``)
brave_api_key      BRAVE_API_KEY         Brave Search API key (none)
duckduckgo_url     DUCKDUCKGO_URL        DuckDuckGo HTML endpoint (``https://html.duckduckgo.com``)
allow_private      LLMOS_ALLOW_PRIVATE   allow loopback/private/link-local/metadata addresses (false)
allow_hosts        LLMOS_ALLOW_HOSTS     ``host:port`` entries exempt from the address guard ([])
allow_file         LLMOS_ALLOW_FILE      allow ``file://`` URLs (false)
allow_domains      LLMOS_ALLOW_DOMAINS   if non-empty, only these domains and their subdomains ([])
deny_domains       LLMOS_DENY_DOMAINS    never these domains or their subdomains ([])
max_bytes          LLMOS_WEB_MAX_BYTES   bytes read per response, after decompression (5 MB)
timeout_s          LLMOS_WEB_TIMEOUT     whole-request deadline in seconds (15)
max_redirects      -                     redirects followed per request (5)
page_chars         -                     characters per page of a document (6000)
=================  ====================  ==========================================================

List values may be given as lists or comma-separated strings. Not covered: per-user
profiles or cookies; every session starts clean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ENV = {
    "web": "LLMOS_WEB",
    "engine": "LLMOS_BROWSER_ENGINE",
    "search": "LLMOS_SEARCH",
    "searxng_url": "SEARXNG_URL",
    "brave_url": "BRAVE_SEARCH_URL",
    "brave_api_key": "BRAVE_API_KEY",
    "duckduckgo_url": "DUCKDUCKGO_URL",
    "allow_private": "LLMOS_ALLOW_PRIVATE",
    "allow_hosts": "LLMOS_ALLOW_HOSTS",
    "allow_file": "LLMOS_ALLOW_FILE",
    "allow_domains": "LLMOS_ALLOW_DOMAINS",
    "deny_domains": "LLMOS_DENY_DOMAINS",
    "max_bytes": "LLMOS_WEB_MAX_BYTES",
    "timeout_s": "LLMOS_WEB_TIMEOUT",
}
ENGINES = ("auto", "httpx", "chromium")
SEARCH_PROVIDERS = ("auto", "searxng", "brave", "duckduckgo", "archive")


@dataclass(frozen=True)
class BrowserSettings:
    web: str = "live"
    engine: str = "auto"
    search: str = "auto"
    searxng_url: str = ""
    brave_url: str = "https://api.search.brave.com"
    brave_api_key: str = ""
    duckduckgo_url: str = "https://html.duckduckgo.com"
    allow_private: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_file: bool = False
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    max_bytes: int = 5_000_000
    timeout_s: float = 15.0
    max_redirects: int = 5
    page_chars: int = 6000

    @property
    def mode(self) -> str:
        """``live``, ``archive`` or ``record``."""
        return self.web.split(":", 1)[0]

    @property
    def archive_path(self) -> str:
        return self.web.split(":", 1)[1] if ":" in self.web else ""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None) -> BrowserSettings:
        settings = settings or {}
        nested = settings.get("browser")
        nested = nested if isinstance(nested, Mapping) else {}
        values: dict[str, Any] = {}
        for name, default in cls.__dataclass_fields__.items():
            raw = nested.get(name, settings.get(name))
            if raw is None and name in _ENV:
                raw = os.environ.get(_ENV[name])
            if raw is not None:
                values[name] = _coerce(name, raw, default.default)
        result = cls(**values)
        _validate(result)
        return result


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, str):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return bool(raw)
    if isinstance(default, tuple):
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(item).strip().lower() for item in items if str(item).strip())
    try:
        return type(default)(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"browser setting {name!r}: cannot read {raw!r} as {type(default).__name__}") from exc


def _validate(s: BrowserSettings) -> None:
    if s.mode not in ("live", "archive", "record") or (s.mode != "live" and not s.archive_path):
        raise ValueError(f"browser setting 'web' must be live, archive:PATH or record:PATH, got {s.web!r}")
    if s.engine not in ENGINES:
        raise ValueError(f"browser setting 'engine' must be one of {ENGINES}, got {s.engine!r}")
    if s.search not in SEARCH_PROVIDERS:
        raise ValueError(f"browser setting 'search' must be one of {SEARCH_PROVIDERS}, got {s.search!r}")
    if s.max_bytes < 1024 or s.timeout_s <= 0 or s.max_redirects < 0 or s.page_chars < 500:
        raise ValueError("browser settings max_bytes >= 1024, timeout_s > 0, max_redirects >= 0, page_chars >= 500")
