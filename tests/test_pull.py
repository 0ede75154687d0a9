"""``llmos pull`` and ``llmos models`` against a hub-compatible server on loopback.

The server implements what a hub client calls: HEAD and GET
``/{owner}/{repo}/resolve/{revision}/{file}`` with the hub's headers (``X-Repo-Commit``,
``ETag``/``X-Linked-Etag`` holding the sha256, ``X-Linked-Size``) and Range requests.
huggingface_hub's own metadata call is pointed at it through ``HF_ENDPOINT``; the transfer
is llmos's (a resumable ``.part``), and one test kills a real ``llmos pull`` process mid-file.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import need_module
from llmos_shell.cli import main

from llmos.models import ModelNotFound, list_models, resolve_model
from llmos.pull import KNOWN_MODELS, ChecksumError, PullError, parse_name, pull

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
        self.pause_at: int | None = None  # the next GET stops after this many bytes until `resume` is set
        self.resume = threading.Event()

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
        pause, self.server.pause_at = self.server.pause_at, None
        try:
            if pause is not None:  # a slow link: part of the file, then nothing for a while
                self.wfile.write(body[:pause])
                self.wfile.flush()
                self.server.resume.wait(20)
                body = body[pause:]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client is gone (killed)


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
    merged = tmp_path / "home" / "models" / "merged" / "llmos-smol-Q8_0-0123456789abcdef.gguf"
    merged.parent.mkdir()
    merged.write_bytes(b"GGUF")  # how a fine-tune runs (llmos.cpu.merge), not a model of its own
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"local\s+qwen2\.5-0\.5b\s+0\.3 MB", listing) and "merged" not in listing
    assert re.search(r"known\s+qwen2\.5-3b\s+.*llmos pull qwen2\.5-3b", listing)


def test_an_interrupted_download_resumes_with_a_range_request(hub):
    hub.cuts = 1  # the connection drops half-way through the file
    pulled = pull("qwen2.5-0.5b", progress=False)
    assert pulled.path.read_bytes() == CONTENT and pulled.verified
    assert hub.ranges == [f"bytes={len(CONTENT) // 2}-"]  # it asked only for what it did not have


def part_file(tmp_path) -> Path:
    return tmp_path / "home" / "models" / "Qwen--Qwen2.5-0.5B-Instruct-GGUF" / (FILE + ".part")


def test_a_killed_pull_resumes_from_its_part_file(hub, tmp_path):
    hub.pause_at = 100_000
    part = part_file(tmp_path)
    main = "from llmos_shell.cli import main; raise SystemExit(main())"
    command = [sys.executable, "-c", main, "pull", "qwen2.5-0.5b"]
    child = subprocess.Popen([*command, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and child.poll() is None:
            if part.is_file() and part.stat().st_size >= 100_000:
                break
            time.sleep(0.02)
        assert child.poll() is None and part.stat().st_size == 100_000, "the pull never got the first bytes"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # like `kill -9`: no cleanup of any kind
        child.wait(5)
        hub.resume.set()
    assert hub.ranges == [] and hub.gets == 1
    pulled = pull("qwen2.5-0.5b", progress=False)
    assert hub.ranges == ["bytes=100000-"] and hub.gets == 2  # only the missing bytes were asked for
    assert pulled.verified and pulled.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert pulled.path.read_bytes() == CONTENT and not part.exists()


def test_a_part_file_that_does_not_verify_is_discarded_and_pulled_again(hub, tmp_path, capsys):
    part = part_file(tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(os.urandom(100_000))  # not the start of this file
    pulled = pull("qwen2.5-0.5b", progress=False)
    assert pulled.path.read_bytes() == CONTENT and pulled.verified and not part.exists()
    assert hub.ranges == ["bytes=100000-"] and hub.gets == 2  # resumed, found wrong, then once from zero
    assert "do not verify; downloading again from zero" in capsys.readouterr().err


def test_a_local_file_that_does_not_match_is_pulled_again(hub, tmp_path):
    path = parse_name("qwen2.5-0.5b").local_path(tmp_path / "home" / "models")
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(len(CONTENT)))
    assert pull("qwen2.5-0.5b", progress=False).path.read_bytes() == CONTENT and hub.gets == 1


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


def test_an_unreachable_hub_is_a_pull_error_unless_the_file_is_there(hub, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(PullError, match="cannot pull"):
        pull("qwen2.5-0.5b", progress=False, endpoint=closed)
    pulled = pull("qwen2.5-0.5b", progress=False)
    offline = pull("qwen2.5-0.5b", progress=False, endpoint=closed)
    assert offline.path == pulled.path and offline.sha256 == pulled.sha256 and not offline.verified
