"""Browser benchmark: open pages from a loopback server, against a naive baseline in the same process.

    python benchmarks/browser.py --json

Figures (all through :class:`llmos_apps.browser.web.Web`, the path the ``open`` tool takes):

* ``static_open_p50_ms``: fetch and extract a ~300 KB article with a 10-row table (target < 80)
* ``baseline_fresh_get_p50_ms``: the naive way, a fresh ``httpx.get`` plus selectolax's
  whole-body text (no main-content selection, no tables), measured side by side
* ``baseline_trafilatura_p50_ms``: ``httpx.get`` + trafilatura, only if trafilatura is installed
* ``js_open_p50_ms``: open a script-built page with ``engine=chromium``, browser warm (target < 400)
* ``cold_browser_s``: the first Chromium render, browser launch included
* ``concurrent_pages_per_s``: 50 static pages opened from 8 threads
* ``table_intact``: the extracted Markdown has the table's caption, header and links

Chromium figures are ``null`` when Chromium or Playwright is missing.
"""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import json
import os
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

import httpx
from llmos_apps.browser.chromium import shared_chromium
from llmos_apps.browser.config import BrowserSettings
from llmos_apps.browser.web import Web
from selectolax.lexbor import LexborHTMLParser


def make_page(target_bytes: int = 300_000) -> bytes:
    rows = "".join(
        f'<tr><td>20{10 + i}</td><td><a href="/rounds/{i}">Series {chr(65 + i)}</a></td><td>${i + 1}0M</td></tr>'
        for i in range(10)
    )
    table = "<table><caption>Funding rounds</caption><thead><tr><th>Year</th><th>Round</th><th>Amount</th></tr>"
    table += f"</thead><tbody>{rows}</tbody></table>"
    nav = "<nav>" + "".join(f'<a href="/section/{i}">Section {i}</a> ' for i in range(200)) + "</nav>"
    footer = "<footer>" + "".join(f'<a href="/legal/{i}">Legal {i}</a> ' for i in range(200)) + "</footer>"
    paragraph = "<p>" + "The company reported steady growth across its business lines this year. " * 6 + "</p>\n"
    count = max(1, (target_bytes - len(nav) - len(footer) - len(table)) // len(paragraph))
    head = "<html><head><title>Benchmark article</title></head><body>"
    article = f"<article><h1>Benchmark article</h1>{paragraph * (count // 2)}{table}{paragraph * (count - count // 2)}"
    return (head + nav + article + "</article>" + footer + "</body></html>").encode()


JS_PAGE = b"""<html><head><title>js</title></head><body><div id="root"></div><script>
document.getElementById('root').innerHTML = '<article><h1>Rendered</h1>' +
  Array.from({length: 40}, (_, i) => '<p>Paragraph ' + i + ' written by script.</p>').join('') + '</article>';
</script></body></html>"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers
    pages: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path.split("?")[0], b"")
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def p50_ms(function: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    Handler.pages = {"/article": make_page(), "/js": JS_PAGE}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    settings = BrowserSettings.from_settings({"allow_hosts": [base.removeprefix("http://")], "engine": "httpx"})
    web = Web(settings)
    url = f"{base}/article"

    doc = web.open(url)
    results: dict[str, Any] = {"page_bytes": len(Handler.pages["/article"]), "runs": args.runs}
    results["table_intact"] = (
        "Table: Funding rounds" in doc.text
        and "| Year | Round | Amount |" in doc.text
        and f"[Series A]({base}/rounds/0)" in doc.text
        and "Legal 7" not in doc.text
    )
    results["static_open_p50_ms"] = p50_ms(lambda: web.open(url), args.runs)

    def fresh_get() -> str:  # the baseline: fetch and parse the page afresh every time
        body = LexborHTMLParser(httpx.get(url, trust_env=False).text).body
        assert body is not None
        return body.text()

    results["baseline_fresh_get_p50_ms"] = p50_ms(fresh_get, args.runs)
    if importlib.util.find_spec("trafilatura"):
        import trafilatura

        results["baseline_trafilatura_p50_ms"] = p50_ms(
            lambda: trafilatura.extract(httpx.get(url, trust_env=False).text, include_tables=True), args.runs
        )
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(web.open, [url] * 50))
    results["concurrent_pages_per_s"] = round(50 / (time.perf_counter() - started), 1)

    results["cold_browser_s"] = results["js_open_p50_ms"] = None
    chromium_path = os.environ.get("LLMOS_CHROMIUM") or shutil.which("chromium")
    if chromium_path and importlib.util.find_spec("playwright"):
        js_web = Web(replace(settings, engine="chromium"))
        js_url = f"{base}/js"
        started = time.perf_counter()
        assert "written by script" in js_web.open(js_url).text
        results["cold_browser_s"] = round(time.perf_counter() - started, 3)
        results["js_open_p50_ms"] = p50_ms(lambda: js_web.open(js_url), max(5, args.runs // 2))
        js_web.close()
        shared_chromium().close()
    web.close()
    server.shutdown()
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
