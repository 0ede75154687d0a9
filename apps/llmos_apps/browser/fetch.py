"""Guarded HTTP fetching with httpx: the browser's fast path and its only way out.

Contract
--------
:meth:`Fetcher.get` returns a :class:`Response` or raises :class:`FetchError` with a
message for the model. On the way it

* vets the URL and every redirect target with the :class:`~.guard.Guard`, and connects
  only to vetted addresses (:class:`~.guard.GuardedBackend`), at most ``max_redirects`` hops;
* refuses binary content types before reading the body, and sniffs the first bytes so a
  binary labelled ``text/html`` is refused too (PDF is the one binary it accepts);
* reads at most ``max_bytes`` *after* decompression, decoding gzip/deflate itself with a
  bounded output per step, so a decompression bomb cannot expand past the cap in memory;
  a body over the cap is cut and marked ``truncated``;
* gives up after ``timeout_s`` for the whole request, not just per socket read.

One ``httpx.Client`` is kept per :class:`Fetcher` and reused: a fresh client costs tens of
milliseconds of set-up, a reused connection about two. Proxy environment variables are
ignored on purpose (a proxy would hide the peer address from the guard).

Not covered: cookies across sessions, authentication, POST; brotli/zstd bodies (not
advertised, refused if sent anyway).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpcore
import httpx
from llmos_errors import LlmosError

from llmos_apps.browser.config import BrowserSettings
from llmos_apps.browser.guard import BlockedURL, Guard, GuardedBackend

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) llmos-browser/0.1"
TEXT_TYPES = {
    "application/xhtml+xml", "application/json", "application/ld+json", "application/xml", "application/rss+xml",
    "application/atom+xml", "application/javascript", "application/x-javascript", "application/ecmascript",
    "image/svg+xml",
}  # fmt: skip
PDF = "application/pdf"
MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x7fELF", b"MZ", b"\x1f\x8b", b"RIFF", b"OggS",
         b"ID3", b"BZh", b"7z\xbc\xaf", b"\xfd7zXZ", b"Rar!", b"\x00\x00\x01\x00", b"wOFF", b"wOF2")  # fmt: skip
CHUNK = 64 * 1024


class FetchError(LlmosError):
    """A fetch that cannot or may not complete; the message is meant for the model."""


@dataclass
class Response:
    url: str  # what was asked for
    final_url: str  # after redirects
    status: int
    content_type: str  # lower-case MIME type without parameters
    body: bytes
    charset: str | None = None
    truncated: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_pdf(self) -> bool:
        return self.content_type == PDF


def is_text_type(mime: str) -> bool:
    return mime.startswith("text/") or mime in TEXT_TYPES


def sniff_binary(head: bytes) -> bool:
    return head.startswith(MAGIC) or b"\x00" in head[:1024]


def parse_content_type(header: str) -> tuple[str, str | None]:
    mime, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ")
    return mime.strip().lower(), charset


class _Decoder:
    """gzip/deflate with output bounded per call: the decompression-bomb guard."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self.zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.zlib = zlib.decompressobj()
        elif encoding in ("", "identity"):
            self.zlib = None
        else:
            raise FetchError(f"unsupported content encoding {encoding!r}")

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Decode ``chunk``, returning at most ``room + 1`` bytes (one more says 'over the cap').

        zlib stops at ``max_length``; input left over then means the body is past the cap
        anyway, so it is never expanded.
        """
        if self.zlib is None:
            return chunk[: room + 1]
        try:
            return self.zlib.decompress(chunk, room + 1)
        except zlib.error as exc:
            raise FetchError(f"corrupt {self.encoding} body: {exc}") from None


class Fetcher:
    def __init__(self, settings: BrowserSettings, trusted_hosts: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.guard = Guard(settings, trusted_hosts)
        transport = httpx.HTTPTransport(trust_env=False)
        # httpx has no public hook for the network backend; the pool it builds is swapped for
        # one that connects only to addresses the guard vetted (see guard.GuardedBackend)
        transport._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=64,
            max_keepalive_connections=32,
            network_backend=GuardedBackend(self.guard),
        )
        self.client = httpx.Client(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "text/html,application/xhtml+xml,application/pdf;q=0.9,*/*;q=0.5",
                "Accept-Encoding": "gzip, deflate",
            },
        )

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, accept_pdf: bool = True, headers: dict[str, str] | None = None) -> Response:
        """Fetch ``url`` following vetted redirects; see the module docstring for the checks."""
        deadline = time.monotonic() + self.settings.timeout_s
        current = url
        for _ in range(self.settings.max_redirects + 1):
            try:
                self.guard.check_url(current)
                if urlsplit(current).scheme == "file":
                    return self._file(url, current)
                with self.client.stream("GET", current, headers=headers) as response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    return self._read(url, current, response, deadline, accept_pdf)
            except BlockedURL as exc:
                raise FetchError(f"blocked: {exc}") from None
            except httpx.TimeoutException:
                raise FetchError(f"timed out fetching {current}") from None
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
                raise FetchError(f"could not fetch {current}: {type(exc).__name__}: {exc}") from None
        raise FetchError(f"too many redirects (more than {self.settings.max_redirects}) from {url}")

    def _read(self, url: str, final: str, response: httpx.Response, deadline: float, accept_pdf: bool) -> Response:
        mime, charset = parse_content_type(response.headers.get("content-type", ""))
        if mime and not is_text_type(mime) and not (accept_pdf and mime == PDF):
            size = response.headers.get("content-length", "unknown")
            raise FetchError(f"refused binary content ({mime}, {size} bytes) at {final}; only text and PDF are read")
        cap = self.settings.max_bytes
        decoder = _Decoder(response.headers.get("content-encoding", "").strip().lower())
        parts: list[bytes] = []
        size, truncated = 0, False
        for chunk in response.iter_raw(CHUNK):
            if time.monotonic() > deadline:
                raise FetchError(f"timed out reading {final} after {self.settings.timeout_s:g} s")
            data = decoder.feed(chunk, cap - size)
            if size + len(data) > cap:
                parts.append(data[: cap - size])
                size, truncated = cap, True
                break  # stop reading: the rest of a huge page never crosses the network
            parts.append(data)
            size += len(data)
        body = b"".join(parts)
        if sniff_binary(body[:1024]) and not body.startswith(b"%PDF"):
            raise FetchError(f"refused binary content at {final} (declared {mime or 'nothing'}, bytes say otherwise)")
        if not mime:
            mime = PDF if body.startswith(b"%PDF") else "text/html"
        if mime == PDF and (truncated or not accept_pdf):
            raise FetchError(f"PDF at {final} is larger than the {cap:,}-byte cap" if truncated else "PDF not wanted")
        headers = {k: v for k, v in response.headers.items() if k in ("content-type", "last-modified", "date")}
        return Response(url, final, response.status_code, mime, body, charset, truncated, headers)

    def _file(self, url: str, current: str) -> Response:
        path = Path(unquote(urlsplit(current).path))
        if not path.is_file():
            raise FetchError(f"no such file: {path}")
        with path.open("rb") as handle:
            body = handle.read(self.settings.max_bytes + 1)
        truncated = len(body) > self.settings.max_bytes
        body = body[: self.settings.max_bytes]
        if body.startswith(b"%PDF"):
            mime = PDF
        elif sniff_binary(body[:1024]):
            raise FetchError(f"refused binary file {path}")
        else:
            mime = "text/html" if path.suffix.lower() in (".html", ".htm", "") else "text/plain"
        return Response(url, current, 200, mime, body, None, truncated)
