"""Search providers: SearXNG's JSON API, Brave Search's API, DuckDuckGo's HTML endpoint, the archive.

Contract: a provider is any object with ``name`` and ``search(query, limit) -> list[SearchHit]``;
it raises :class:`~.fetch.FetchError` when the service fails. The network providers go
through the guarded :class:`~.fetch.Fetcher`, with their configured endpoint trusted
(the user chose it; a SearXNG instance on localhost is common). Base URLs are settings,
so tests point them at loopback servers that imitate each API.

:func:`choose_provider` picks, for ``search=auto``: the archive in archive mode, else
SearXNG if ``searxng_url`` is set, else Brave if an API key is set, else DuckDuckGo.

Not covered: paging through results, images/news verticals, rate limiting.
"""

from __future__ import annotations

import json
from typing import Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from selectolax.lexbor import LexborHTMLParser

from llmos_apps.browser.archive import Archive, SearchHit
from llmos_apps.browser.config import BrowserSettings
from llmos_apps.browser.fetch import Fetcher, FetchError


class Provider(Protocol):
    name: str

    def search(self, query: str, limit: int) -> list[SearchHit]: ...


def endpoint_host(base_url: str) -> str:
    """``host:port`` of a configured endpoint, the form the guard's exemptions use."""
    parts = urlsplit(base_url)
    return f"{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _strip_tags(html: str) -> str:
    return " ".join(LexborHTMLParser(f"<p>{html}</p>").text().split()) if "<" in html else " ".join(html.split())


def _json(fetcher: Fetcher, url: str, headers: dict[str, str] | None = None) -> dict:
    response = fetcher.get(url, accept_pdf=False, headers=headers)
    if response.status != 200:
        raise FetchError(f"search service answered HTTP {response.status} at {url.split('?')[0]}")
    try:
        return json.loads(response.body)
    except ValueError:
        raise FetchError(f"search service at {url.split('?')[0]} did not answer JSON") from None


class SearxngProvider:
    name = "searxng"

    def __init__(self, fetcher: Fetcher, base_url: str) -> None:
        self.fetcher, self.base_url = fetcher, base_url.rstrip("/")

    def search(self, query: str, limit: int) -> list[SearchHit]:
        data = _json(self.fetcher, f"{self.base_url}/search?" + urlencode({"q": query, "format": "json"}))
        results = data.get("results") or []
        return [SearchHit(str(r.get("title", "")), str(r["url"]), _strip_tags(str(r.get("content", ""))))
                for r in results if isinstance(r, dict) and r.get("url")][:limit]  # fmt: skip


class BraveProvider:
    name = "brave"

    def __init__(self, fetcher: Fetcher, base_url: str, api_key: str) -> None:
        self.fetcher, self.base_url, self.api_key = fetcher, base_url.rstrip("/"), api_key

    def search(self, query: str, limit: int) -> list[SearchHit]:
        if not self.api_key:
            raise FetchError("Brave search needs an API key (set BRAVE_API_KEY)")
        url = f"{self.base_url}/res/v1/web/search?" + urlencode({"q": query, "count": limit})
        data = _json(self.fetcher, url, {"Accept": "application/json", "X-Subscription-Token": self.api_key})
        results = (data.get("web") or {}).get("results") or []
        return [SearchHit(_strip_tags(str(r.get("title", ""))), str(r["url"]),
                          _strip_tags(str(r.get("description", ""))))
                for r in results if isinstance(r, dict) and r.get("url")][:limit]  # fmt: skip


class DuckDuckGoProvider:
    name = "duckduckgo"

    def __init__(self, fetcher: Fetcher, base_url: str) -> None:
        self.fetcher, self.base_url = fetcher, base_url.rstrip("/")

    def search(self, query: str, limit: int) -> list[SearchHit]:
        response = self.fetcher.get(f"{self.base_url}/html/?" + urlencode({"q": query}), accept_pdf=False)
        if response.status != 200:
            raise FetchError(f"DuckDuckGo answered HTTP {response.status}")
        tree = LexborHTMLParser(response.body.decode("utf-8", errors="replace"))
        hits: list[SearchHit] = []
        for result in tree.css(".result"):
            anchor = result.css_first("a.result__a")
            if anchor is None:
                continue
            url = _unwrap_redirect(anchor.attributes.get("href") or "")
            snippet = result.css_first(".result__snippet")
            if url.startswith(("http://", "https://")):
                hits.append(
                    SearchHit(" ".join(anchor.text().split()), url, " ".join(snippet.text().split()) if snippet else "")
                )
            if len(hits) >= limit:
                break
        return hits


def _unwrap_redirect(href: str) -> str:
    """DuckDuckGo wraps result links as ``//duckduckgo.com/l/?uddg=<target>``."""
    parts = urlsplit(href)
    if parts.path.startswith("/l/") and "uddg" in parse_qs(parts.query):
        return parse_qs(parts.query)["uddg"][0]
    return href


class ArchiveProvider:
    name = "archive"

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def search(self, query: str, limit: int) -> list[SearchHit]:
        return self.archive.search(query, limit)


def trusted_endpoints(settings: BrowserSettings) -> tuple[str, ...]:
    return tuple(endpoint_host(u) for u in (settings.searxng_url, settings.brave_url, settings.duckduckgo_url) if u)


def choose_provider(settings: BrowserSettings, fetcher: Fetcher, archive: Archive | None) -> Provider:
    name = settings.search
    if name == "auto":
        if settings.mode == "archive":
            name = "archive"
        elif settings.searxng_url:
            name = "searxng"
        elif settings.brave_api_key:
            name = "brave"
        else:
            name = "duckduckgo"
    if name == "archive":
        if archive is None:
            raise FetchError("search=archive needs web=archive:PATH or record:PATH")
        return ArchiveProvider(archive)
    if name == "searxng":
        if not settings.searxng_url:
            raise FetchError("search=searxng needs searxng_url (or SEARXNG_URL)")
        return SearxngProvider(fetcher, settings.searxng_url)
    if name == "brave":
        return BraveProvider(fetcher, settings.brave_url, settings.brave_api_key)
    return DuckDuckGoProvider(fetcher, settings.duckduckgo_url)
