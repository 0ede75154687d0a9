"""The Chromium engine against real loopback servers: JavaScript pages, the guard inside the browser, replay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import need_binary, need_module
from llmos_apps.browser import web
from llmos_apps.browser.chromium import Chromium, shared_chromium
from llmos_tools import ToolContext, ToolError
from test_browser import LoopbackSite, open_url

JS_PAGE = """<!DOCTYPE html><html><head><title>Loading</title><script src="/app.js"></script></head>
<body><div id="root"></div><noscript>Please enable JavaScript.</noscript></body></html>"""
APP_JS = """
document.addEventListener('DOMContentLoaded', async () => {
  const rows = await (await fetch('/rows.json')).json();
  let probe = 'internal probe failed';
  try { await fetch('http://169.254.169.254/latest/meta-data/'); probe = 'internal probe succeeded'; } catch (e) {}
  const table = rows.map(r => `<tr><td>${r[0]}</td><td>${r[1]}</td></tr>`).join('');
  document.getElementById('root').innerHTML = `<article><h1>Rendered by script</h1>
    <p>Client-side text appears here.</p><p>${probe}</p>
    <table><caption>Rounds</caption><tr><th>Round</th><th>Amount</th></tr>${table}</table></article>`;
});
"""


@pytest.fixture
def js_site() -> Iterator[LoopbackSite]:
    need_module("playwright")
    need_binary("chromium")
    site = LoopbackSite()
    site.html("/app", JS_PAGE)
    site.html("/app.js", APP_JS, "application/javascript")
    site.html("/rows.json", '[["Series A", "$4.5M"], ["Series B", "$18M"]]', "application/json")
    yield site
    site.close()


def context(site: LoopbackSite, **extra: object) -> ToolContext:
    return ToolContext(session_id=uuid.uuid4().hex, settings=site.settings(**extra))


def test_javascript_page_is_rendered_automatically(js_site: LoopbackSite) -> None:
    result = open_url(js_site.url("/app"), context(js_site))
    assert result.data["engine"] == "chromium"
    assert "# Rendered by script" in result.text and "Client-side text appears here." in result.text
    assert "Table: Rounds\n| Round | Amount |\n|---|---|\n| Series A | $4.5M |\n| Series B | $18M |" in result.text
    # the page's own request to the metadata address went through the guard and failed
    assert "internal probe failed" in result.text


def test_engine_setting_forces_either_engine(js_site: LoopbackSite) -> None:
    static = open_url(js_site.url("/app"), context(js_site, engine="httpx"))
    assert static.data["engine"] == "httpx" and "Rendered by script" not in static.text
    js_site.html("/plain", "<html><body><p>" + "static words " * 40 + "</p></body></html>")
    forced = open_url(js_site.url("/plain"), context(js_site, engine="chromium"))
    assert forced.data["engine"] == "chromium" and "static words" in forced.text
    browser = shared_chromium().browser
    open_url(js_site.url("/app"), context(js_site, engine="chromium"))
    assert shared_chromium().browser is browser and browser.is_connected()  # one process, reused


def test_rendered_page_replays_from_archive_without_network(js_site: LoopbackSite, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    recorded = open_url(js_site.url("/app"), context(js_site, web=f"record:{archive}"))
    js_site.close()
    replayed = open_url(js_site.url("/app"), context(js_site, web=f"archive:{archive}"))
    assert replayed.text == recorded.text and "Series B" in replayed.text


def test_chromium_error_is_reported(js_site: LoopbackSite) -> None:
    with pytest.raises(ToolError, match="HTTP 404"):
        open_url(js_site.url("/missing"), context(js_site, engine="chromium"))


def test_auto_mode_falls_back_to_static_text_when_chromium_is_missing(
    js_site: LoopbackSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = Chromium("/nonexistent/chromium")
    monkeypatch.setattr(web, "shared_chromium", lambda: missing)
    result = open_url(js_site.url("/app"), context(js_site))
    assert result.data["engine"] == "httpx" and "Chromium is not installed" in result.text
    with pytest.raises(ToolError, match="Chromium is not installed"):
        open_url(js_site.url("/app"), context(js_site, engine="chromium"))
