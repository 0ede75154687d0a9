"""The router over several servers (llmos.cpu.endpoints): unit tests on fake server CPUs, then real servers.

The fakes stand in for :class:`~llmos.cpu.http.HttpCPU` (the per-server CPU the router
drives) and fail as scripted, so rendezvous hashing, retries, failover and back-pressure are
checked exactly. The integration test runs two llama-cpp-python servers serving SmolLM2 on
loopback, with their RAM prompt cache on, and kills one in the middle of the run.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest
from helpers import smollm2_model
from test_http_cpu import LlamaServer, Stub, chunk, json_error, serve_llama, serve_stub, sse

from llmos.cpu.base import Counters, CPUError, Piece, Sampling, Segment, count_distinct
from llmos.cpu.endpoints import (
    Endpoints,
    EndpointsBusy,
    NoEndpointAvailable,
    SessionCPU,
    affinity_key,
    rendezvous_order,
)
from llmos.cpu.http import HttpCPU, ServerUnavailable
from llmos.dialects.openai import OpenAIDialect
from llmos.events import Done
from llmos.kernel import Budgets, Kernel
from llmos.models import ModelNotFound, open_machine, server_urls

URLS = ["http://a:1", "http://b:1", "http://c:1"]


# ---------------------------------------------------------------- fake servers
class World:
    """What each fake server does next: a script of outcomes per URL (then "ok" for ever)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []  # (url, what): "count" or "stream"
        self.in_flight: dict[str, int] = {}

    def next(self, url: str, what: str) -> str:
        self.calls.append((url, what))
        script = self.scripts.get(url, [])
        return script.pop(0) if script else "ok"


class FakeServerCPU:
    """A server's CPU as the router sees it; ``down`` raises ServerUnavailable, ``cut`` fails mid-stream."""

    def __init__(self, url: str, world: World) -> None:
        self.url, self.world = url, world
        self.counters = Counters()
        self._seen_keys: dict[str, int] = {}
        self.segments: list[Segment] = []
        self.counted: set[str] = set()  # texts this server has counted tokens of
        self.closed = False

    def load(self, segments: Sequence[Segment]) -> None:
        if any(segment.text not in self.counted for segment in segments):  # as HttpCPU: new text is counted
            self._outcome("count")
            self.counted.update(segment.text for segment in segments)
        for segment in segments:
            count_distinct(self.counters, self._seen_keys, segment, len(segment.text))
        self.segments = list(segments)

    def count_tokens(self, text: str, trusted: bool = False) -> int:
        self._outcome("count")
        return len(text)

    def server_chat_template(self) -> str:
        self._outcome("count")
        return "{{ template }}"

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        if sampling.forced_prefix:
            yield Piece(None, sampling.forced_prefix)
        outcome = self._outcome("stream")
        self.world.in_flight[self.url] = self.world.in_flight.get(self.url, 0) + 1
        try:
            yield Piece(None, f"from {self.url}")
            if outcome == "cut":
                raise ServerUnavailable(f"{self.url}: the stream ended before data: [DONE]")
            yield Piece(None, ".")
            self.counters.tokens_evaluated += 5
            self.counters.tokens_sampled += 2
        finally:
            self.world.in_flight[self.url] -= 1

    def last_prefill(self) -> tuple[int, int, bool]:
        return 10, 4, True

    def close(self) -> None:
        self.closed = True

    def _outcome(self, what: str) -> str:
        outcome = self.world.next(self.url, what)
        if outcome == "down":
            raise ServerUnavailable(f"cannot connect to {self.url}")
        if outcome == "400":
            raise CPUError(f"{self.url} answered 400: bad request")
        return outcome


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def router(world: World, clock: Clock, urls: Sequence[str] = URLS, **options: object) -> Endpoints:
    settings: dict[str, object] = {"retries": 2, "backoff": 0.25, "down_for": 30.0, **options}
    return Endpoints(
        urls,
        lambda url: FakeServerCPU(url, world),  # type: ignore[arg-type,return-value]
        clock=clock,
        sleep=clock.sleep,
        **settings,  # type: ignore[arg-type]
    )


def turn(cpu: SessionCPU, text: str, sampling: Sampling | None = None) -> str:
    cpu.load([Segment("system prompt", tag="system", key="s"), Segment(text, tag="user", key=text)])
    return "".join(piece.text for piece in cpu.generate(sampling or Sampling()))


def first_choice(key: str, urls: Sequence[str] = URLS) -> str:
    return rendezvous_order(key, urls)[0]


# ---------------------------------------------------------------- rendezvous hashing
def test_rendezvous_moves_only_the_sessions_of_a_removed_or_added_server() -> None:
    keys = [f"session-{i}" for i in range(1200)]
    before = {key: first_choice(key) for key in keys}
    assert set(before.values()) == set(URLS)
    assert all(300 < list(before.values()).count(url) < 500 for url in URLS)  # about a third each
    after_removal = {key: first_choice(key, URLS[:2]) for key in keys}
    moved = [key for key in keys if after_removal[key] != before[key]]
    assert moved and all(before[key] == URLS[2] for key in moved)  # only c's sessions moved
    grown = [*URLS, "http://d:1"]
    after_addition = {key: first_choice(key, grown) for key in keys}
    moved = [key for key in keys if after_addition[key] != before[key]]
    assert all(after_addition[key] == "http://d:1" for key in moved)  # moved only to the new server
    assert 200 < len(moved) < 400  # about a quarter
    assert rendezvous_order("x", URLS) == rendezvous_order("x", list(reversed(URLS)))  # order of the list is moot


def test_the_affinity_key_is_the_text_up_to_the_first_user_turn() -> None:
    segments = [Segment("tools", tag="tools"), Segment("sys", tag="system"), Segment("hi", tag="user")]
    assert affinity_key([*segments, Segment("later", tag="assistant")]) == "tools\0sys\0hi"
    assert affinity_key([Segment("a"), Segment("b")]) == "a\0b"


# ---------------------------------------------------------------- affinity and failover
def test_sessions_stick_to_their_first_choice_across_turns() -> None:
    world, clock = World(), Clock()
    endpoints = router(world, clock)
    cpus = {name: endpoints.cpu(session_id=name) for name in ("s1", "s2", "s3", "s4", "s5", "s6")}
    for round_ in range(3):
        for cpu in cpus.values():
            assert turn(cpu, f"question {round_}") == f"from {first_choice(cpu.session_id)}."
    for name, cpu in cpus.items():
        assert dict(cpu.requests) == {first_choice(name): 3}
    assert len({first_choice(name) for name in cpus}) > 1  # the sessions spread over the servers
    stats = endpoints.stats()
    assert sum(s["requests"] for s in stats.values()) == 18
    assert all(
        s["prefilled_tokens"] == 4 * s["requests"] and s["prompt_tokens"] == 10 * s["requests"] for s in stats.values()
    )
    assert not clock.sleeps


def test_without_a_session_id_the_prompt_prefix_pins_the_session() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu()
    turn(cpu, "what is 2+2?")
    key = "system prompt\0what is 2+2?"
    assert cpu.endpoint == first_choice(key)
    turn(cpu, "and 3+3?")  # the key stays the first load's
    assert dict(cpu.requests) == {first_choice(key): 2}


def test_a_server_that_fails_then_answers_is_retried_with_backoff() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu("s1")
    home = first_choice("s1")
    world.scripts[home] = ["ok", "down", "down"]  # the load counts, then the stream fails twice
    assert turn(cpu, "q") == f"from {home}."
    assert clock.sleeps == [0.25, 0.5]
    stats = cpu.router.stats()[home]
    assert stats["failures"] == 2 and stats["downs"] == 0 and not stats["down"]


def test_a_dead_server_is_marked_down_and_its_sessions_move_to_their_next_choice() -> None:
    world, clock = World(), Clock()
    endpoints = router(world, clock)
    sessions = [name for name in (f"s{i}" for i in range(40)) if first_choice(name) == URLS[0]][:2]
    first, second = (endpoints.cpu(name) for name in sessions)
    world.scripts[URLS[0]] = ["down"] * 3
    assert turn(first, "q") == f"from {rendezvous_order(sessions[0], URLS)[1]}."
    assert endpoints.stats()[URLS[0]]["down"] and endpoints.stats()[URLS[0]]["downs"] == 1
    calls = len(world.calls)
    assert turn(second, "q") == f"from {rendezvous_order(sessions[1], URLS)[1]}."
    assert all(url != URLS[0] for url, _ in world.calls[calls:])  # marked down: not even tried
    clock.now += 31  # the mark expires: the sessions go home
    assert turn(first, "again") == f"from {URLS[0]}."


def test_when_no_server_serves_the_error_names_each() -> None:
    world, clock = World(), Clock()
    endpoints = router(world, clock, URLS[:2], retries=1)
    world.scripts = {url: ["down"] * 10 for url in URLS[:2]}
    with pytest.raises(NoEndpointAvailable, match=r"http://a:1 \(cannot connect.*http://b:1 \(cannot connect"):
        turn(endpoints.cpu("s"), "q")
    assert all(s["down"] and s["failures"] == 2 for s in endpoints.stats().values())
    world.scripts = {}
    assert turn(endpoints.cpu("s"), "q").startswith("from ")  # all marked down: all tried anyway


def test_a_stream_cut_after_its_first_piece_is_raised_and_the_next_request_goes_elsewhere() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu("s1")
    home, second = rendezvous_order("s1", URLS)[:2]
    world.scripts[home] = ["ok", "cut"]
    pieces: list[str] = []
    with pytest.raises(ServerUnavailable, match="ended before"):
        cpu.load([Segment("q", tag="user")])
        pieces.extend(piece.text for piece in cpu.generate(Sampling()))
    assert pieces == [f"from {home}"]  # not retried: the text already went out
    assert cpu.router.stats()[home]["down"]
    assert turn(cpu, "q") == f"from {second}."


def test_other_errors_are_not_retried() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu("s1")
    world.scripts[first_choice("s1")] = ["ok", "400"]
    with pytest.raises(CPUError, match="answered 400"):
        turn(cpu, "q")
    assert not clock.sleeps and not cpu.router.stats()[first_choice("s1")]["down"]


def test_a_forced_prefix_is_yielded_once_when_the_request_is_retried() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu("s1")
    world.scripts[first_choice("s1")] = ["ok", "down"]
    assert turn(cpu, "q", Sampling(forced_prefix="<call>")) == f"<call>from {first_choice('s1')}."


# ---------------------------------------------------------------- back-pressure and counters
def test_a_caller_waits_for_a_slot_then_gets_endpoints_busy() -> None:
    world, clock = World(), Clock()
    endpoints = router(world, clock, max_in_flight=1, wait_timeout=0.05)
    sessions = [name for name in (f"s{i}" for i in range(40)) if first_choice(name) == URLS[1]][:2]
    holder, waiter = (endpoints.cpu(name) for name in sessions)
    holder.load([Segment("q", tag="user")])
    stream = holder.generate(Sampling())
    next(stream)  # holder's request is in flight
    with pytest.raises(EndpointsBusy, match=r"http://b:1: all 1 request slots stayed busy for 0\.05 s"):
        turn(waiter, "q")
    stream.close()  # closing the stream frees the slot
    assert world.in_flight[URLS[1]] == 0
    assert turn(waiter, "q") == f"from {URLS[1]}."


def test_the_slot_limit_holds_under_threads() -> None:
    world, clock = World(), Clock()
    endpoints = router(world, clock, URLS[:1], max_in_flight=2, wait_timeout=10)
    peak, lock, gate = [0], threading.Lock(), threading.Barrier(4)

    def run(name: str) -> None:
        cpu = endpoints.cpu(name)
        cpu.load([Segment("q", tag="user")])
        gate.wait()
        for _ in cpu.generate(Sampling()):
            with lock:
                peak[0] = max(peak[0], world.in_flight[URLS[0]])

    threads = [threading.Thread(target=run, args=(f"s{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert 1 <= peak[0] <= 2 and endpoints.stats()[URLS[0]]["requests"] == 4


def test_counters_add_up_and_a_failover_does_not_count_the_context_again() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock).cpu("s1")
    turn(cpu, "q")
    assert (cpu.counters.tokens_evaluated, cpu.counters.tokens_sampled) == (5, 2)
    context = cpu.counters.context_tokens
    assert context == len("system prompt") + len("q")
    world.scripts[first_choice("s1")] = ["down"] * 3
    turn(cpu, "q")  # the same segments, now on the next server
    assert cpu.counters.context_tokens == context
    assert (cpu.counters.tokens_evaluated, cpu.counters.tokens_sampled) == (10, 4)
    server_cpus = [server_cpu for server_cpu in cpu._cpus.values() if isinstance(server_cpu, FakeServerCPU)]
    cpu.close()
    assert len(server_cpus) == 2 and all(server_cpu.closed for server_cpu in server_cpus)


def test_round_robin_rotates_over_the_servers() -> None:
    world, clock = World(), Clock()
    cpu = router(world, clock, routing="round-robin").cpu("s1")
    assert [turn(cpu, f"q{i}") for i in range(4)] == [f"from {url}." for url in [*URLS, URLS[0]]]


# ---------------------------------------------------------------- the model spec and HttpCPU's side
def test_comma_separated_urls_open_a_router() -> None:
    assert server_urls(" http://a:1 , http://b:1/v1 ") == ["http://a:1", "http://b:1/v1"]
    with pytest.raises(ModelNotFound, match="not an http"):
        server_urls("http://a:1,b:1")
    machine = open_machine("http://127.0.0.1:9,http://127.0.0.1:10", n_ctx=1024)
    assert isinstance(machine.cpu, SessionCPU) and machine.dialect.name == "openai"
    assert list(machine.cpu.router.endpoints) == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    assert machine.cpu.n_ctx == 1024
    again = open_machine("http://127.0.0.1:9,http://127.0.0.1:10", n_ctx=1024)  # another job of `llmos run --jobs`
    assert isinstance(again.cpu, SessionCPU) and again.cpu.router is machine.cpu.router and again.cpu is not machine.cpu
    text = open_machine("http://127.0.0.1:9,http://127.0.0.1:10", dialect="llmos")
    assert isinstance(text.cpu, SessionCPU) and text.dialect.name == "llmos"
    assert text.cpu.router is not machine.cpu.router  # another dialect drives other CPUs
    server_cpu = text.cpu.router.make("http://127.0.0.1:9")
    assert type(server_cpu) is HttpCPU and server_cpu.markers == text.dialect.markers  # /v1/completions text
    server_cpu.close()
    with pytest.raises(ValueError, match="distinct"):
        Endpoints(["http://a:1", "http://a:1/v1"])


@pytest.fixture
def stub() -> Iterator[Stub]:
    yield from serve_stub()


def test_server_failures_are_server_unavailable_and_request_errors_are_not(stub: Stub) -> None:
    stub.reply = json_error(503, {"error": {"message": "loading model"}})
    cpu = HttpCPU(stub.url, timeout=5)
    cpu.load([Segment("hello", tokens=(1,))])
    with pytest.raises(ServerUnavailable, match="answered 503: loading model"):
        list(cpu.generate(Sampling()))
    stub.reply = json_error(404, {"error": {"message": "no such model"}})
    with pytest.raises(CPUError) as raised:
        list(cpu.generate(Sampling()))
    assert not isinstance(raised.value, ServerUnavailable)


def test_last_prefill_takes_the_servers_figures_where_it_gives_them(stub: Stub) -> None:
    cpu = HttpCPU(stub.url, timeout=5)
    cpu.load([Segment("Once upon a time" * 10, key="p")])  # 40 tokens by the estimate (no tokenizer)
    usage = {"prompt_tokens": 50, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 42}}
    stub.reply = sse([chunk("x", "stop"), "data: " + '{"choices": [], "usage": ' + _json(usage) + "}", "data: [DONE]"])
    list(cpu.generate(Sampling()))
    assert cpu.last_prefill() == (50, 8, True)
    stub.reply = sse([chunk("x", "stop"), "data: [DONE]"])  # llama-cpp-python: no report in a stream
    list(cpu.generate(Sampling()))
    assert cpu.last_prefill() == (40, 40, False)


def _json(value: object) -> str:
    import json

    return json.dumps(value)


# ---------------------------------------------------------------- real servers
HIT = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens")


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LlamaServer]]:
    """Two SmolLM2 servers with a RAM prompt cache (several prefixes each), one thread each."""
    folder = tmp_path_factory.mktemp("endpoints")
    arguments = ["--model", str(smollm2_model()), "--n_ctx", "1024", "--n_threads", "1", "--n_batch", "64"]
    arguments += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(64 << 20)]
    serve = contextlib.contextmanager(serve_llama)
    with (
        serve(["llmos.testing", "serve", *arguments], folder / "a.log") as first,
        serve(["llmos.testing", "serve", *arguments], folder / "b.log") as second,
    ):
        yield [first, second]


def ask(kernels: dict[str, Kernel], cpu: SessionCPU, question: str) -> None:
    """One turn of the session, through a real kernel (one per session, kept in ``kernels``)."""
    if cpu.session_id not in kernels:
        budgets = Budgets(max_steps=1, max_step_tokens=6)
        kernels[cpu.session_id] = Kernel(cpu, OpenAIDialect(), system="You answer in one word.", budgets=budgets)
    done = list(kernels[cpu.session_id].ask(question))[-1]
    assert isinstance(done, Done) and done.reason in ("answer", "budget"), done


def requests_in(log: Path) -> int:
    return log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')


@pytest.mark.slow
def test_sessions_stick_to_their_server_and_move_when_it_dies(two_servers: list[LlamaServer]) -> None:
    urls = [server.url for server in two_servers]
    endpoints = Endpoints(urls, n_ctx=1024, retries=1, backoff=0.1, down_for=300)
    names = [f"session-{i}" for i in range(40)]
    chosen = [n for n in names if first_choice(n, urls) == urls[0]][:2] + [
        n for n in names if first_choice(n, urls) == urls[1]
    ][:2]
    cpus = [endpoints.cpu(name) for name in chosen]
    kernels: dict[str, Kernel] = {}
    for question in ("Name a colour.", "Name another one."):
        for cpu in cpus:
            ask(kernels, cpu, question)
    for cpu in cpus:  # every turn went to the session's own server
        assert dict(cpu.requests) == {first_choice(cpu.session_id, urls): 2}
    for server in two_servers:  # and the servers say so
        assert requests_in(server.log) == 4
        hits = [int(hit[1]) for hit in HIT.finditer(server.log.read_text(errors="replace"))]
        # second turns continue the session's own first turn (the RAM cache keeps both sessions):
        # they reuse more than the system prompt the first turns share
        assert len(hits) == 3 and min(hits[1:]) > hits[0], hits

    dead = two_servers[0]
    assert dead.process is not None
    dead.process.terminate()
    dead.process.wait(timeout=10)
    for cpu in cpus:
        ask(kernels, cpu, "And a third?")
    for cpu in cpus[:2]:  # a's sessions moved to b, the run completed
        assert dict(cpu.requests) == {urls[0]: 2, urls[1]: 1} and cpu.endpoint == urls[1]
    stats = endpoints.stats()
    assert stats[urls[0]]["down"] and stats[urls[0]]["downs"] == 1 and stats[urls[0]]["failures"] == 2
    assert stats[urls[1]]["requests"] == 8 and requests_in(two_servers[1].log) == 8
    for cpu in cpus:
        cpu.close()
