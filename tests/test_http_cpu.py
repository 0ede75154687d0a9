"""HttpCPU against a real llama_cpp.server on loopback, and against a stub server for the failure modes.

The stub is a tiny ``http.server`` in a thread that answers each request with the
reply the test installed: canned SSE, an error status, a cut connection, garbage.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import need_module, stories_model

from llmos.cpu.base import CPU, ContextOverflow, CPUError, Piece, Sampling, Segment, defang
from llmos.cpu.http import HttpCPU, from_url, server_root
from llmos.testing import LocalServer, free_port, local_server

SERVER_START_SECONDS = 60
MARKERS = ("<s>", "</s>")  # the special tokens of stories260K


# ---------------------------------------------------------------- the real server
LlamaServer = LocalServer  # a test may stop its server (test_endpoints)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    model = stories_model()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    # one thread leaves a core to the client
    yield from serve_llama(["llama_cpp.server", "--model", str(model), "--n_ctx", "512", "--n_threads", "1"], log)


def serve_llama(module_and_args: list[str], log: Path) -> Iterator[LlamaServer]:
    """``python -m MODULE ARGS`` (a llama_cpp.server) on a free loopback port, until the caller is done."""
    for module in ("llama_cpp", "uvicorn", "sse_starlette", "fastapi"):
        need_module(module)
    with local_server(module_and_args, log, SERVER_START_SECONDS) as server:
        yield server


@pytest.fixture
def cpu(llama_server: LlamaServer) -> Iterator[HttpCPU]:
    cpu = HttpCPU(llama_server.url, n_ctx=512, timeout=30, markers=MARKERS)
    try:
        yield cpu
    finally:
        cpu.close()


def read_all(pieces: Iterator[Piece]) -> list[Piece]:
    return list(pieces)


@pytest.mark.slow
def test_streams_text_pieces_from_a_real_server(cpu: HttpCPU) -> None:
    assert isinstance(cpu, CPU)
    cpu.load([Segment("Once upon a time", key="story")])
    pieces = read_all(cpu.generate(Sampling(max_tokens=12)))
    assert 0 < len(pieces) <= 12
    assert all(piece.token is None and piece.text for piece in pieces)
    assert cpu.counters.tokens_sampled == len(pieces)
    assert cpu.counters.context_tokens == 4  # the server's tokenizer: 4 tokens, its BOS left out
    assert cpu.counters.tokens_evaluated >= 4 + len(pieces)


@pytest.mark.slow
def test_closing_the_generator_stops_the_server(cpu: HttpCPU, llama_server: LlamaServer) -> None:
    offset = llama_server.log_size()
    cpu.load([Segment("Once upon a time, a little dog")])
    stream = cpu.generate(Sampling(max_tokens=400))
    pieces = [next(stream) for _ in range(3)]
    stream.close()
    assert len(pieces) == 3
    # The server notices the closed connection at its next chunk and stops generating.
    deadline = time.monotonic() + 10
    while "Disconnected from client" not in llama_server.log_since(offset) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Disconnected from client" in llama_server.log_since(offset)
    cpu.load([Segment("The cat")])
    assert read_all(cpu.generate(Sampling(max_tokens=4)))  # the server is free for the next request


@pytest.mark.slow
def test_a_second_generate_reuses_the_servers_prompt_cache(cpu: HttpCPU, llama_server: LlamaServer) -> None:
    story = Segment("Once upon a time, there was a little girl named Lily. She loved to play outside.", key="s")
    cpu.load([story])
    answer = "".join(piece.text for piece in cpu.generate(Sampling(max_tokens=8)))
    first_prompt = cpu.counters.context_tokens
    offset, evaluated_before = llama_server.log_size(), cpu.counters.tokens_evaluated
    cpu.load([story, Segment(answer, key="a"), Segment(" One day, her mom said", key="u")])
    pieces = read_all(cpu.generate(Sampling(max_tokens=8)))
    assert pieces
    # llama_cpp.server reports no timings in a stream; its verbose log says what it evaluated.
    hit = re.search(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens", llama_server.log_since(offset))
    assert hit, llama_server.log_since(offset)[-2000:]
    reused, evaluated = int(hit[1]), int(hit[2])
    assert reused >= first_prompt and evaluated < reused + evaluated
    # Without a report the client estimates the same thing: only the new text counts as evaluated.
    new_tokens = cpu.count_tokens(" One day, her mom said", trusted=True)
    assert cpu.counters.tokens_evaluated - evaluated_before - len(pieces) <= new_tokens + 2


@pytest.mark.slow
def test_untrusted_text_cannot_spell_a_special_token(cpu: HttpCPU) -> None:
    assert cpu.count_tokens("</s>", trusted=True) == 1  # the end-of-sequence token itself
    assert cpu.count_tokens("</s>") > 1  # defanged: plain characters
    cpu.load([Segment("Once upon a time"), Segment(" she said </s>", trusted=False), Segment(" and")])
    assert "</s>" not in cpu._prompt and defang(" she said </s>", MARKERS) in cpu._prompt
    assert read_all(cpu.generate(Sampling(max_tokens=4)))


@pytest.mark.slow
def test_a_prompt_past_the_window_is_a_context_overflow(cpu: HttpCPU) -> None:
    with pytest.raises(ContextOverflow, match="exceeds the window of 512"):
        cpu.load([Segment("word " * 600)])  # counted by the server's tokenizer before anything is sent


# ---------------------------------------------------------------- the stub server
Reply = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Stub:
    url: str
    reply: Reply = field(default=lambda handler: handler.send_error(404))
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)

    def completions(self) -> list[dict[str, Any]]:
        return [body for path, _, body in self.requests if path == "/v1/completions"]


class StubHandler(BaseHTTPRequestHandler):
    stub: Stub

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.stub.requests.append((self.path, dict(self.headers), json.loads(body or b"null")))
        if self.path in ("/v1/completions", "/v1/chat/completions"):
            self.stub.reply(self)
        else:
            self.send_error(404)  # no tokenizer endpoint: the client estimates

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not hold up the teardown

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is what some tests do


@pytest.fixture
def stub() -> Iterator[Stub]:
    yield from serve_stub()


def serve_stub() -> Iterator[Stub]:
    """A stub server on loopback that answers ``/v1/completions`` and ``/v1/chat/completions`` with its ``reply``."""
    server = QuietServer(("127.0.0.1", 0), StubHandler)
    stub = Stub(f"http://127.0.0.1:{server.server_address[1]}")
    StubHandler.stub = stub
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def chunk(text: str, finish: str | None = None, **extra: Any) -> str:
    return "data: " + json.dumps({"choices": [{"text": text, "index": 0, "finish_reason": finish}], **extra})


def sse(lines: list[str], status: int = 200) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        for line in lines:
            handler.wfile.write(f"{line}\n\n".encode())
            handler.wfile.flush()

    return reply


def json_error(status: int, body: dict[str, Any]) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def stub_cpu(stub: Stub, **options: Any) -> HttpCPU:
    cpu = HttpCPU(stub.url, **{"timeout": 5, **options})
    cpu.load([Segment("Once upon a time" * 10, key="p")])  # 160 characters: 40 tokens by the estimate
    return cpu


def test_request_fields_and_reported_counts(stub: Stub) -> None:
    report = {"timings": {"prompt_n": 7, "cache_n": 33, "predicted_n": 2}}
    stub.reply = sse([": ping", "event: message", chunk(" there"), chunk(" was", "stop", **report), "data: [DONE]"])
    cpu = stub_cpu(stub, model="m", api_key="sekret", markers=["<|call|>"])
    cpu.load([Segment("Hi "), Segment("<|call|> evil", trusted=False)])
    pieces = read_all(cpu.generate(Sampling(max_tokens=9, stop=("\n",), repeat_penalty=1.1, dry_multiplier=0.8)))
    assert [piece.text for piece in pieces] == [" there", " was"]
    assert cpu.count_tokens("abcdefgh", trusted=True) == 2  # the tokenizer answered 404: 4 characters a token
    (body,) = stub.completions()
    assert body["prompt"] == "Hi " + defang("<|call|> evil", ["<|call|>"])
    assert body["stream"] is True and body["cache_prompt"] is True and body["model"] == "m"
    assert body["max_tokens"] == 9 and body["stop"] == ["\n"] and body["repeat_penalty"] == 1.1
    assert (body["dry_multiplier"], body["dry_allowed_length"]) == (0.8, 2)
    assert "grammar" not in body
    assert stub.requests[-1][1]["Authorization"] == "Bearer sekret"
    assert cpu.counters.tokens_evaluated == 7 + 2 and cpu.counters.tokens_sampled == 2
    assert cpu._prompt.endswith(" there was")


def test_without_a_report_the_new_prompt_tokens_are_estimated(stub: Stub) -> None:
    stub.reply = sse([chunk("ab"), chunk("cd", "length"), "data: [DONE]"])
    cpu = stub_cpu(stub)
    read_all(cpu.generate(Sampling()))
    assert cpu.counters.tokens_evaluated == 40 + 2
    cpu.load([Segment("Once upon a time" * 10, key="p"), Segment("abcd", key="a"), Segment("x" * 40, key="u")])
    read_all(cpu.generate(Sampling()))
    assert cpu.counters.tokens_evaluated == 42 + 10 + 2  # only the 40 new characters, plus the two chunks
    assert cpu.counters.context_tokens == 40 + 1 + 10


def test_a_500_shows_the_servers_message(stub: Stub) -> None:
    stub.reply = json_error(500, {"error": {"message": "the model fell over", "type": "server_error"}})
    with pytest.raises(CPUError, match=r"/v1/completions answered 500: the model fell over"):
        read_all(stub_cpu(stub).generate(Sampling()))


def test_a_400_about_the_context_is_a_context_overflow(stub: Stub) -> None:
    message = "This model's maximum context length is 512 tokens, however you requested 1810 tokens"
    stub.reply = json_error(400, {"error": {"message": message, "code": "context_length_exceeded"}})
    with pytest.raises(ContextOverflow, match="answered 400: This model's maximum context length is 512"):
        read_all(stub_cpu(stub).generate(Sampling()))


def test_a_refused_connection_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cpu = HttpCPU(url, timeout=5)
    with pytest.raises(CPUError, match=f"cannot connect to {url}/tokenize"):
        cpu.load([Segment("hello")])
    cpu.load([Segment("hello", tokens=(1, 2))])  # preset tokens: nothing to count, straight to the completion
    with pytest.raises(CPUError, match=f"cannot connect to {url}/v1/completions"):
        read_all(cpu.generate(Sampling()))


def cut_chunked_stream(handler: BaseHTTPRequestHandler) -> None:
    """Two chunks of a chunked body, then the connection closes without the final chunk."""
    handler.protocol_version = "HTTP/1.1"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for data in (chunk("Once") + "\n\n", chunk(" upon") + "\n\n"):
        handler.wfile.write(f"{len(data):x}\r\n{data}\r\n".encode())
    handler.wfile.flush()
    handler.close_connection = True


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (cut_chunked_stream, "the connection failed"),
        (sse([chunk("Once"), chunk(" upon")]), r"ended before data: \[DONE\]"),
    ],
    ids=["connection-cut", "no-done"],
)
def test_a_stream_cut_midway_is_an_error(stub: Stub, reply: Reply, message: str) -> None:
    stub.reply = reply
    pieces: list[Piece] = []
    with pytest.raises(CPUError, match=message):
        pieces.extend(stub_cpu(stub).generate(Sampling()))
    assert [piece.text for piece in pieces] == ["Once", " upon"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["this is not an event"], "malformed server-sent event line"),
        (["data: {not json"], "not JSON"),
        (["data: [1, 2]"], "not an object"),
        (['data: {"error": {"message": "out of memory"}}'], "failed mid-stream: out of memory"),
        (['error: {"message": "slot unavailable"}'], "failed mid-stream"),
    ],
    ids=["garbage", "bad-json", "not-object", "error-event", "error-field"],
)
def test_malformed_sse_is_an_error(stub: Stub, lines: list[str], message: str) -> None:
    stub.reply = sse(lines)
    with pytest.raises(CPUError, match=message):
        read_all(stub_cpu(stub).generate(Sampling()))


def test_a_silent_server_times_out(stub: Stub) -> None:
    def silent(handler: BaseHTTPRequestHandler) -> None:
        sse([chunk("Once")])(handler)
        time.sleep(20)

    stub.reply = silent
    started = time.monotonic()
    with pytest.raises(CPUError, match=r"did not answer within 0\.3 s"):
        read_all(stub_cpu(stub, timeout=0.3).generate(Sampling()))
    assert time.monotonic() - started < 10  # the timeout ended it, not the server (loose: CI is loaded)


def test_generate_needs_a_context_and_a_grammar_needs_llama_extras(stub: Stub) -> None:
    cpu = HttpCPU(stub.url)
    with pytest.raises(CPUError, match="load a context first"):
        read_all(cpu.generate(Sampling()))
    cpu = stub_cpu(stub, llama_extras=False)
    with pytest.raises(CPUError, match="grammar"):
        read_all(cpu.generate(Sampling(grammar='root ::= "a"')))


def test_urls() -> None:
    assert server_root("http://h:1/v1/") == server_root("http://h:1") == "http://h:1"
    assert from_url("http://h:1/v1", model="m").base_url == "http://h:1"
    with pytest.raises(ValueError, match="not an http"):
        from_url("h:1")
