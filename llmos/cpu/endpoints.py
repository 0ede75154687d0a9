"""Several OpenAI-compatible servers behind one router: session affinity, failover, back-pressure.

::

    from llmos.cpu.endpoints import Endpoints
    router = Endpoints(["http://a:8080", "http://b:8080", "http://c:8080"], n_ctx=4096)
    cpu = router.cpu(session_id="s1")  # one session's CPU (a ChatCPU per server, by default)
    ...                                # a Kernel drives it like any CPU
    router.stats()                     # per server: requests, failures, prompt and prefilled tokens

``llmos --model http://a:8080,http://b:8080`` opens one (:func:`llmos.models.open_machine`).

Each server keeps the KV of the prompts it has seen (a prefix cache), so a session's next
request is cheap only on the server that served its last one: the router pins each session.

Contract
--------
* Affinity: a session goes to the first server of its rendezvous order, the servers sorted by
  ``blake2b(key, url)`` (highest random weight). ``key`` is ``cpu.session_id`` when set, else
  the text of the session's first load up to its first user turn (system prompt and first
  question: stable for the whole session). Adding or removing a URL moves only the sessions
  whose first choice it becomes or was (about 1/n of them).
* Failover: a request a server does not serve (:class:`~llmos.cpu.http.ServerUnavailable`:
  refused connection, timeout, cut connection, 5xx) is tried again on that server up to
  ``retries`` times, after ``backoff``, ``2 * backoff``… seconds; then the server is marked
  down for ``down_for`` seconds and the request goes to the session's next server in its order
  (all its sessions do, at once, until the mark expires). When every server is marked down
  they are all tried in order anyway (one may be back); when none serves, the error is
  :class:`NoEndpointAvailable`, naming each failure. Other errors (a 4xx, a context overflow)
  are raised at once.
* A stream that fails after its first piece is not retried (the kernel already has the
  text): its server is marked down and the error raised; the next request goes elsewhere.
* Back-pressure: at most ``max_in_flight`` completion streams per server at once, over all
  the router's sessions; a caller waits at most ``wait_timeout`` seconds for a slot, then
  :class:`EndpointsBusy`. Token counts and template reads are not gated (they are short).
* Counters: a session CPU adds up what its per-server CPUs counted (evaluated and sampled
  tokens, times). Context tokens are counted on the kernel's load, once per segment key
  across servers (a failover does not count the context again).
* :meth:`Endpoints.stats`, per server: requests, failed attempts, times marked down, prompt
  tokens, tokens prefilled. Prefilled is the server's own figure where it reports one
  (llama.cpp ``timings.prompt_n``, ``usage`` minus ``cached_tokens``; counted in
  ``reported``), else the whole prompt (:meth:`~llmos.cpu.http.HttpCPU.last_prefill`).
  llama-cpp-python's server reports nothing in a stream: there only its log tells.
* ``routing="round-robin"``: each request to the next server in turn, no affinity (servers
  without a prefix cache; the baseline ``benchmarks/processes.py`` compares with).

Not covered: servers serving different models (all URLs must serve one model: a session
counts tokens on whichever server it is on); health probes (a down server is tried again only
when its mark expires and a request needs it); sharing marks or slots between processes;
moving a session's KV between servers (the new server prefills the whole context).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from llmos.cpu.base import Counters, CPUError, Piece, Sampling, Segment
from llmos.cpu.http import HttpCPU, ServerUnavailable, server_root

T = TypeVar("T")
Routing = Literal["affinity", "round-robin"]


class EndpointsBusy(CPUError):
    """A server's request slots all stayed busy for longer than the router's wait timeout."""


class NoEndpointAvailable(CPUError):
    """No server of the router served the request (each failure is in the message)."""


def rendezvous_order(key: str, urls: Sequence[str]) -> list[str]:
    """``urls`` by descending ``blake2b(key, url)``: the session's first choice, then its fallbacks."""

    def weight(url: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()

    return sorted(urls, key=weight, reverse=True)


def affinity_key(segments: Sequence[Segment]) -> str:
    """The text that identifies a session from its first load: everything up to its first user turn."""
    texts = []
    for segment in segments:
        texts.append(segment.text)
        if segment.tag == "user":
            break
    return "\0".join(texts)


@dataclass
class EndpointStats:
    requests: int = 0  # completion streams served
    failures: int = 0  # attempts the server did not serve
    downs: int = 0  # times marked down
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # what it evaluated of those prompts (module docstring)
    reported: int = 0  # requests whose prefilled figure is the server's own


@dataclass
class Endpoint:
    url: str
    slots: threading.BoundedSemaphore
    down_until: float = 0.0
    last_error: str = ""
    stats: EndpointStats = field(default_factory=EndpointStats)


class Endpoints:
    """A router over several servers of one model (module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        make: Callable[[str], HttpCPU] | None = None,
        *,
        n_ctx: int = 8192,
        routing: Routing = "affinity",
        max_in_flight: int = 2,
        wait_timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.25,
        down_for: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        roots = [server_root(url) for url in urls]
        if not roots or len(set(roots)) != len(roots):
            raise ValueError(f"a router needs distinct server URLs, got {list(urls)}")
        if routing not in ("affinity", "round-robin"):
            raise ValueError(f"routing is 'affinity' or 'round-robin', not {routing!r}")
        self.endpoints = {url: Endpoint(url, threading.BoundedSemaphore(max_in_flight)) for url in roots}
        self.make = make or (lambda url: _chat_cpu(url, n_ctx))
        self.n_ctx = n_ctx
        self.routing = routing
        self.max_in_flight = max_in_flight
        self.wait_timeout = wait_timeout
        self.retries = retries
        self.backoff = backoff
        self.down_for = down_for
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._turn = 0  # round-robin's next server

    def cpu(self, session_id: str = "") -> SessionCPU:
        """A CPU for one session (``session_id`` is its affinity key; see the module docstring)."""
        return SessionCPU(self, session_id)

    def candidates(self, key: str, stream: bool = False) -> list[Endpoint]:
        """The servers to try for a request, in order: those not marked down, else all of them.

        Round-robin moves on to the next server for each completion ``stream`` only.
        """
        urls = list(self.endpoints)
        if self.routing == "round-robin":
            with self._lock:
                start = self._turn % len(urls)
                self._turn += 1 if stream else 0
            order = urls[start:] + urls[:start]
        else:
            order = rendezvous_order(key, urls)
        now = self.clock()
        endpoints = [self.endpoints[url] for url in order]
        return [e for e in endpoints if e.down_until <= now] or endpoints

    def mark_down(self, endpoint: Endpoint, error: Exception) -> None:
        with self._lock:
            endpoint.down_until = self.clock() + self.down_for
            endpoint.last_error = str(error)
            endpoint.stats.downs += 1

    def note_failure(self, endpoint: Endpoint) -> None:
        with self._lock:
            endpoint.stats.failures += 1

    def acquire(self, endpoint: Endpoint) -> None:
        """Take one of the server's request slots, waiting at most ``wait_timeout`` seconds."""
        if not endpoint.slots.acquire(timeout=self.wait_timeout):
            raise EndpointsBusy(
                f"{endpoint.url}: all {self.max_in_flight} request slots stayed busy for {self.wait_timeout} s"
            )

    def record(self, endpoint: Endpoint, cpu: HttpCPU) -> None:
        """Add the last request of ``cpu`` to the server's stats."""
        prompt, prefilled, reported = cpu.last_prefill()
        with self._lock:
            stats = endpoint.stats
            stats.requests += 1
            stats.prompt_tokens += prompt
            stats.prefilled_tokens += prefilled
            stats.reported += reported

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per server URL: its :class:`EndpointStats` as a dict, whether it is marked down, its last error."""
        now = self.clock()
        with self._lock:
            return {
                url: {**vars(e.stats), "down": e.down_until > now, "last_error": e.last_error}
                for url, e in self.endpoints.items()
            }


class SessionCPU:
    """One session's CPU on a router: the :class:`~llmos.cpu.base.CPU` interface, routed per request."""

    def __init__(self, router: Endpoints, session_id: str = "") -> None:
        self.router = router
        self.session_id = session_id  # the affinity key when set (the runner and Processes set it)
        self.name = "endpoints:" + ",".join(router.endpoints)
        self.n_ctx = router.n_ctx
        self.counters = Counters()
        self.endpoint = ""  # the server the last request went to
        self.requests: Counter[str] = Counter()  # completion streams per server
        self._cpus: dict[str, HttpCPU] = {}  # one per server this session has used
        self._seen_keys: dict[str, int] = {}  # segment keys counted into context_tokens, on any server
        self._prefix_key = ""
        self._segments: list[Segment] | None = None

    @property
    def key(self) -> str:
        return self.session_id or self._prefix_key

    def load(self, segments: Sequence[Segment]) -> None:
        segments = list(segments)
        self._prefix_key = self._prefix_key or affinity_key(segments)

        def load_on(endpoint: Endpoint, cpu: HttpCPU) -> None:
            before = replace(cpu.counters)
            cpu.load(segments)  # the window check, with the server's token counts
            _add_counts(self.counters, before, cpu.counters, context=True)

        self._route(load_on)
        self._segments = segments

    def count_tokens(self, text: str, trusted: bool = False) -> int:
        return self._route(lambda endpoint, cpu: cpu.count_tokens(text, trusted))

    def server_chat_template(self) -> str:
        return self._route(lambda endpoint, cpu: cpu.server_chat_template())

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        """Stream from the session's server; failover happens before the first piece (module docstring)."""
        if self._segments is None:
            raise CPUError("nothing to continue from: load a context first")
        segments = self._segments

        def start(endpoint: Endpoint, cpu: HttpCPU) -> tuple[Generator[Piece, None, None], list[Piece], Counters]:
            self.router.acquire(endpoint)
            try:
                before = replace(cpu.counters)
                cpu.load(segments)  # this server's CPU may hold another context (or a forced prefix)
                stream = cpu.generate(sampling)
                return stream, _head(stream, bool(sampling.forced_prefix)), before
            except BaseException:
                endpoint.slots.release()
                raise

        endpoint, cpu, (stream, head, before) = self._route_with(start, stream=True)
        try:
            yield from head
            yield from stream
        except ServerUnavailable as error:  # after the first piece: too late to retry
            self.router.note_failure(endpoint)
            self.router.mark_down(endpoint, error)
            raise
        finally:
            stream.close()
            endpoint.slots.release()
            self.router.record(endpoint, cpu)
            self.requests[endpoint.url] += 1
            _add_counts(self.counters, before, cpu.counters, context=False)

    def _route(self, action: Callable[[Endpoint, HttpCPU], T]) -> T:
        return self._route_with(action)[2]

    def _route_with(
        self, action: Callable[[Endpoint, HttpCPU], T], stream: bool = False
    ) -> tuple[Endpoint, HttpCPU, T]:
        """Run ``action`` on the session's server, with retries and failover (module docstring)."""
        failures = []
        for endpoint in self.router.candidates(self.key, stream):
            cpu = self._cpu(endpoint.url)
            for attempt in range(self.router.retries + 1):
                if attempt:
                    self.router.sleep(self.router.backoff * 2 ** (attempt - 1))
                try:
                    result = action(endpoint, cpu)
                except ServerUnavailable as error:
                    self.router.note_failure(endpoint)
                    failure = error
                    continue
                self.endpoint = endpoint.url
                return endpoint, cpu, result
            failures.append(f"{endpoint.url} ({failure})")
            self.router.mark_down(endpoint, failure)
        raise NoEndpointAvailable(f"no server served the request after retries: {'; '.join(failures)}")

    def _cpu(self, url: str) -> HttpCPU:
        cpu = self._cpus.get(url)
        if cpu is None:
            cpu = self._cpus[url] = self.router.make(url)
            # one session's segment keys count once into context_tokens, whichever server loaded them
            cpu._seen_keys = self._seen_keys
        return cpu

    def close(self) -> None:
        for cpu in self._cpus.values():
            cpu.close()
        self._cpus.clear()


def _chat_cpu(url: str, n_ctx: int) -> HttpCPU:
    from llmos.cpu.chat import ChatCPU

    return ChatCPU(url, n_ctx=n_ctx)


def _head(stream: Generator[Piece, None, None], forced_prefix: bool) -> list[Piece]:
    """The stream's first piece from the server (after the forced prefix, if any): the request has succeeded."""
    head: list[Piece] = []
    for piece in stream:
        head.append(piece)
        if len(head) > forced_prefix:
            break
    return head


def _add_counts(total: Counters, before: Counters, after: Counters, *, context: bool) -> None:
    """Add what a server's CPU counted since ``before`` (context tokens only when ``context``)."""
    for item in fields(Counters):
        if item.name == "context_tokens" and not context:
            continue
        value = getattr(total, item.name) + getattr(after, item.name) - getattr(before, item.name)
        setattr(total, item.name, value)
