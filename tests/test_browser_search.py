"""Search providers against loopback servers imitating SearXNG, Brave and DuckDuckGo, and the archive."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from llmos_apps.browser import plugin
from llmos_tools import ToolContext, ToolError, Trust
from test_browser import EXAMPLES, LoopbackSite


@pytest.fixture
def api() -> Iterator[LoopbackSite]:
    site = LoopbackSite()
    yield site
    site.close()


def run_search(settings: dict[str, Any], query: str = "scale ai funding", **args: Any) -> Any:
    context = ToolContext(session_id=uuid.uuid4().hex, settings=settings)
    return plugin.search.run({"query": query, **args}, context)


def test_searxng_json_api(api: LoopbackSite) -> None:
    results = {"results": [{"url": "https://a.example/1", "title": "First", "content": "about <b>scale</b>"},
                           {"url": "https://b.example/2", "title": "Second", "content": ""}]}  # fmt: skip
    api.html("/search", json.dumps(results), "application/json")
    # the configured SearXNG endpoint is trusted for search without allow_hosts
    result = run_search({"searxng_url": api.url("")})
    assert result.trust is Trust.UNTRUSTED and result.source == "search:searxng"
    assert "1. First\n   https://a.example/1\n   about scale" in result.text
    assert "format=json" in api.requests[0] and "q=scale+ai+funding" in api.requests[0]


def test_configured_search_endpoint_is_not_open_to_pages(api: LoopbackSite) -> None:
    api.html("/admin", "<p>local service</p>")
    context = ToolContext(session_id="x", settings={"searxng_url": api.url("")})
    with pytest.raises(ToolError, match="blocked"):
        plugin.open_page.run({"url": api.url("/admin")}, context)


def test_brave_api_sends_key_and_reads_web_results(api: LoopbackSite) -> None:
    seen: list[str] = []

    def brave(handler: Any) -> None:
        seen.append(handler.headers.get("X-Subscription-Token", ""))
        body = json.dumps({"web": {"results": [{"url": "https://c.example/", "title": "C <strong>AI</strong>",
                                                "description": "desc"}]}}).encode()  # fmt: skip
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    api.routes["/res/v1/web/search"] = brave
    result = run_search({"search": "brave", "brave_url": api.url(""), "brave_api_key": "k-123"}, max_results=3)
    assert seen == ["k-123"] and "count=3" in api.requests[0]
    assert result.data == [{"title": "C AI", "url": "https://c.example/", "snippet": "desc"}]
    with pytest.raises(ToolError, match="API key"):
        run_search({"search": "brave", "brave_url": api.url(""), "brave_api_key": ""})


def test_duckduckgo_html_endpoint(api: LoopbackSite) -> None:
    page = """<html><body><div class="results">
    <div class="result"><h2><a class="result__a"
      href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fd.example%2Fpage&rut=x">D page</a></h2>
    <a class="result__snippet">Snippet <b>D</b></a></div>
    <div class="result"><a class="result__a" href="https://e.example/">E page</a></div>
    </div></body></html>"""
    api.html("/html/", page)
    result = run_search({"search": "duckduckgo", "duckduckgo_url": api.url("")})
    assert [hit["url"] for hit in result.data] == ["https://d.example/page", "https://e.example/"]
    assert result.data[0]["snippet"] == "Snippet D"


def test_search_service_failures_are_clear(api: LoopbackSite) -> None:
    api.html("/search", "not json", "text/plain")
    with pytest.raises(ToolError, match="did not answer JSON"):
        run_search({"searxng_url": api.url("")})
    with pytest.raises(ToolError, match="HTTP 404"):
        run_search({"searxng_url": api.url("/nothing-here")})
    with pytest.raises(ToolError, match="needs web=archive"):
        run_search({"search": "archive"})


def test_archive_search_ranks_the_right_company_first() -> None:
    settings = {"web": f"archive:{EXAMPLES}"}
    for query, slug in (("Scale AI funding rounds", "scale-ai"), ("Databricks valuation", "databricks"),
                        ("hugging face series D", "hugging-face")):  # fmt: skip
        result = run_search(settings, query)
        assert result.data[0]["url"] == f"https://web.llmos.example/companies/{slug}/funding", query
    assert "No results" in run_search(settings, "quantum teleportation recipes").text
