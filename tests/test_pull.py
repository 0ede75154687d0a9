"""``llmos pull`` and ``llmos models`` against a hub-compatible server on loopback.

The server implements just what ``hf_hub_download`` calls: HEAD and GET
``/{owner}/{repo}/resolve/{revision}/{file}`` with the hub's headers (``X-Repo-Commit``,
``ETag``/``X-Linked-Etag`` holding the sha256, ``X-Linked-Size``) and Range requests.
The download code is huggingface_hub's own, pointed at it through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import need_module

from llmos.cli import main
from llmos.models import ModelNotFound
from llmos.pull import KNOWN_MODELS, ChecksumError, PullError, list_models, parse_name, pull, resolve_model

need_module("huggingface_hub")

REPO, FILE = "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
CONTENT = os.urandom(300_000)  # a "model": random bytes, big enough to cut in the middle


class Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files: dict[str, bytes] = {f"{REPO}/resolve/main/{FILE}": CONTENT}
        self.published_sha: str | None = None  # None: the real sha256 of the bytes
        self.cuts = 0  # this many GETs send half the file, then drop the connection
        self.ranges: list[str] = []
        self.gets = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _file(self) -> bytes | None:
        return self.server.files.get(self.path.lstrip("/").split("?")[0])

    def _hub_headers(self, data: bytes) -> None:
        sha = self.server.published_sha or hashlib.sha256(data).hexdigest()
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self) -> None:
        data = self._file()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._hub_headers(data)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_GET(self) -> None:
        data = self._file()
        if data is None:
            self.send_error(404)
            return
        self.server.gets += 1
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if match:
            self.server.ranges.append(self.headers["Range"])
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self._hub_headers(data)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cuts:
            self.server.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the network drops mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def hub(monkeypatch, tmp_path) -> Iterator[Hub]:
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("LLMOS_MODEL", raising=False)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_short_names_and_hub_ids():
    assert parse_name("qwen2.5-1.5b").repo == "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
    hub_file = parse_name("hf:me/models/sub/m.gguf@v2")
    assert (hub_file.repo, hub_file.filename, hub_file.revision) == ("me/models", "sub/m.gguf", "v2")
    with pytest.raises(PullError, match="not a known model"):
        parse_name("gpt-5")


def test_pull_downloads_verifies_and_resolves(hub, tmp_path, capsys):
    assert main(["pull", "qwen2.5-0.5b", "--quiet"]) == 0
    path = tmp_path / "home" / "models" / "Qwen--Qwen2.5-0.5B-Instruct-GGUF" / FILE
    assert path.read_bytes() == CONTENT
    assert "sha256 verified" in capsys.readouterr().out
    assert resolve_model("qwen2.5-0.5b") == path
    again = pull("qwen2.5-0.5b", progress=False)  # up to date: nothing fetched again
    assert again.verified and hub.gets == 1
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"local\s+qwen2\.5-0\.5b\s+0\.3 MB", listing)
    assert re.search(r"known\s+qwen2\.5-3b\s+.*llmos pull qwen2\.5-3b", listing)


def test_an_interrupted_download_resumes_with_a_range_request(hub, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub counts resumable bytes per chunk (10 MB); small chunks let a small file show it
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.cuts = 1  # the connection drops half-way through the file
    pulled = pull("qwen2.5-0.5b", progress=False)
    assert pulled.path.read_bytes() == CONTENT and pulled.verified
    (asked,) = hub.ranges
    start = int(asked.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(CONTENT) // 2  # it asked only for what it did not have


def test_a_corrupt_download_is_removed(hub, tmp_path):
    hub.published_sha = "0" * 64
    with pytest.raises(ChecksumError, match="does not match"):
        pull("qwen2.5-0.5b", progress=False)
    assert not parse_name("qwen2.5-0.5b").local_path(tmp_path / "home" / "models").exists()
    with pytest.raises(ModelNotFound, match=re.escape("llmos pull qwen2.5-0.5b")):
        resolve_model("qwen2.5-0.5b")


def test_a_missing_file_is_a_pull_error(hub, capsys):
    assert main(["pull", "hf:nobody/nothing/absent.gguf", "--quiet"]) == 1
    assert "cannot pull" in capsys.readouterr().err


def test_models_lists_known_names_without_a_cache(hub):
    kinds = {(e.kind, e.name) for e in list_models()}
    assert {("known", name) for name in KNOWN_MODELS} <= kinds
