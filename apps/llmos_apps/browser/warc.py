"""Read a WARC file (``.warc`` or ``.warc.gz``) as a read-only web archive.

``web: "archive:crawl.warc.gz"`` replays the ``response`` records of a WARC 1.0/1.1 file
(what wget ``--warc-file``, Browsertrix or the Internet Archive produce) through the same
interface as the folder archive: :meth:`WarcArchive.get` answers a URL with the recorded
status, content type and body, following recorded redirects within the file (at most 5
hops). Chunked transfer coding and gzip/deflate content coding are undone on load.

Not covered: writing WARC (record mode writes the folder format), ``revisit`` records
(deduplicated payloads), request records, and WARC files larger than memory: the whole
file is read at start.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from pathlib import Path
from urllib.parse import urljoin

from llmos_apps.browser.archive import Archive, normalize_url
from llmos_apps.browser.fetch import Response, parse_content_type

MAX_BODY = 50_000_000  # per record, after decoding


class WarcArchive(Archive):
    def __init__(self, path: str | Path) -> None:
        # the folder archive's state, filled from the WARC instead of index.json
        self.root, self.lock, self.texts = Path(path), threading.Lock(), {}
        self.pages: dict[str, dict] = {}
        self.description = f"WARC file {path}"
        self.responses: dict[str, Response] = {}
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as handle:
            data = handle.read()
        for uri, block in _records(data):
            response = _http_response(uri, block)
            key = normalize_url(uri)
            self.responses[key] = response
            self.pages[key] = {"file": key, "content_type": response.content_type, "status": response.status}

    def get(self, url: str) -> Response | None:
        current = url
        for _ in range(6):
            response = self.responses.get(normalize_url(current))
            if response is None:
                return None
            location = response.headers.get("location")
            if not (300 <= response.status < 400 and location):
                return Response(url, current, response.status, response.content_type, response.body, response.charset)
            current = urljoin(current, location)
        return None

    def put(self, response: Response) -> None:
        raise ValueError("a WARC archive is read-only; record into a folder instead")


def _records(data: bytes) -> list[tuple[str, bytes]]:
    """(target URI, HTTP block) of every ``response`` record."""
    found: list[tuple[str, bytes]] = []
    position = 0
    while (start := data.find(b"WARC/", position)) != -1:
        header_end = data.find(b"\r\n\r\n", start)
        if header_end == -1:
            break
        fields = _fields(data[start:header_end])
        length = int(fields.get("content-length", "0"))
        block = data[header_end + 4 : header_end + 4 + length]
        position = header_end + 4 + length
        if fields.get("warc-type") == "response" and fields.get("warc-target-uri"):
            found.append((fields["warc-target-uri"].strip("<>"), block))
    return found


def _fields(head: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def _http_response(uri: str, block: bytes) -> Response:
    head, _, body = block.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 200
    headers = _fields(b"\r\n".join([b"HTTP"] + [h.encode("iso-8859-1") for h in header_lines]))
    if "chunked" in headers.get("transfer-encoding", ""):
        body = _unchunk(body)
    encoding = headers.get("content-encoding", "")
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)
        body = decoder.decompress(body, MAX_BODY)
    mime, charset = parse_content_type(headers.get("content-type", "text/html"))
    kept = {"location": headers["location"]} if "location" in headers else {}
    return Response(uri, uri, status, mime or "text/html", body[:MAX_BODY], charset, headers=kept)


def _unchunk(body: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end == -1:
            break
        size = int(body[position:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += body[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
    return bytes(out)
