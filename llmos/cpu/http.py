"""An OpenAI-compatible HTTP CPU: inference on a serving engine, through httpx.

:class:`HttpCPU` talks to any server that offers ``POST /v1/completions`` with
``stream: true`` (llama.cpp's ``llama-server``, ``llama_cpp.server``, vLLM, SGLang,
Ollama, a hosted API). It is a text-only backend: pieces carry text, no token ids.

Contract (in addition to :mod:`llmos.cpu.base`)
-----------------------------------------------
* ``load(segments)`` renders the prompt text: trusted segments as is, segments with
  preset ``tokens`` (the model's own output) as is, untrusted segments through
  :func:`~llmos.dialects.base.defang` with ``markers``, because servers tokenize the
  prompt with special-token parsing on.
* ``generate(sampling)`` sends the whole prompt every time and streams the answer
  (SSE ``data:`` lines up to ``data: [DONE]``); each chunk becomes a ``Piece(None,
  text)`` and is appended to the context. KV continuity is the server's job: its
  prompt cache (llama.cpp ``cache_prompt``, llama-cpp-python's prefix match, vLLM's
  prefix caching) evaluates only what differs from the previous request. Closing the
  generator closes the HTTP response at once, so the server stops generating.
* With ``llama_extras`` (the default) the request also carries ``cache_prompt``,
  ``top_k``, and ``repeat_penalty``/``dry_multiplier``/``grammar`` when set: fields of the llama.cpp
  family that vLLM accepts or ignores, but a strict hosted API may reject; turn it
  off there. A grammar without ``llama_extras`` is refused rather than dropped; a lazy
  call grammar (``grammar_trigger``, best-effort by contract) is not sent at all.
* Token counts come from the server's tokenizer when it has one (llama.cpp
  ``POST /tokenize``, llama-cpp-python ``POST /extras/tokenize/count``; the count of
  the empty string, i.e. a BOS, is subtracted), else ~4 characters per token.
* Counters: ``tokens_evaluated`` takes the prompt tokens the server says it evaluated
  (llama.cpp ``timings.prompt_n``, or ``usage.prompt_tokens`` minus
  ``prompt_tokens_details.cached_tokens``); when it says nothing, the estimate of the
  prompt past the longest common prefix with the previous request (as a prefix cache
  would), plus the generated tokens. ``tokens_sampled`` takes ``timings.predicted_n``
  or ``usage.completion_tokens``, else one per chunk. Times are client wall clock:
  until the first chunk counts as evaluation, the rest as sampling.
* Every failure (refused connection, timeout, non-200 answer, a stream cut before
  ``[DONE]``, a malformed SSE line) raises :class:`CPUError` naming the URL; a 400
  about the context length raises :class:`ContextOverflow`; the failures of the
  server rather than of the request (no connection, a timeout, a cut connection, a
  5xx answer) raise its subclass :class:`ServerUnavailable`, which a router may retry
  elsewhere (:mod:`llmos.cpu.endpoints`). Connect and read timeouts bound every wait.
* :meth:`HttpCPU.last_prefill` says what the last request cost the server: prompt
  tokens, and those it prefilled (its report, else all of them).

Not covered: chat completions (``/v1/chat/completions``), token-id prompts, SSE
events split over several ``data:`` lines, server-side KV shifting or paging (a cut
in the middle of the prompt costs a re-prefill from the cut on), concurrent use of
one instance from several threads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from llmos.cpu.base import ContextOverflow, Counters, CPUError, Piece, Sampling, Segment, count_distinct, defang

CHARS_PER_TOKEN = 4  # the usual estimate for English text with BPE vocabularies
NO_TOKENIZER = ""  # the server has no tokenizer endpoint: estimate
# Tokenizer endpoints tried in order: (path, the request field holding the text).
TOKENIZERS = (
    ("/tokenize", "content"),  # llama.cpp llama-server: {"tokens": [...]}
    ("/extras/tokenize/count", "input"),  # llama-cpp-python's llama_cpp.server: {"count": n}
)


class ServerUnavailable(CPUError):
    """The server did not serve the request: no connection, a timeout, a cut connection, a 5xx answer."""


def server_root(url: str) -> str:
    """``http://host:port`` from ``http://host:port`` or ``http://host:port/v1`` (trailing slash or not)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    root = url.rstrip("/")
    return root.removesuffix("/v1")


def from_url(spec: str, **options: Any) -> HttpCPU:
    """An :class:`HttpCPU` for ``http://host:port`` or ``http://host:port/v1``."""
    return HttpCPU(spec, **options)  # the constructor accepts either form; this name reads well in configuration


class HttpCPU:
    """A model served over OpenAI-compatible HTTP (``/v1/completions``, streaming)."""

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key: str | None = None,
        n_ctx: int = 8192,
        timeout: float = 120,
        markers: Sequence[str] = (),
        client: httpx.Client | None = None,
        llama_extras: bool = True,
    ) -> None:
        self.base_url = server_root(base_url)
        self.model = model
        self.name = f"http:{model or self.base_url}"
        self.n_ctx = n_ctx
        self.timeout = timeout
        self.markers = tuple(markers)
        self.llama_extras = llama_extras
        self.counters = Counters()
        key = api_key if api_key is not None else os.environ.get("LLMOS_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # A refused or silent server must fail fast; a slow model may take long between chunks.
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._prompt = ""  # the context as text, generated text included
        self._prompt_tokens = 0  # its token count as of the last load
        self._server_text = ""  # what the server last saw (prompt + answer): its prompt cache, presumably
        self._seen_keys: dict[str, int] = {}
        self._counts: dict[str, int] = {}  # rendered text -> tokens
        self._tokenizer: str | None = None  # the endpoint that works, NO_TOKENIZER, or None before probing
        self._tokenizer_overhead = 0  # tokens the endpoint adds to any text (a BOS)
        self.last_report: dict[str, Any] = {}  # the usage/timings of the last request, as the server sent them

    # ---------------------------------------------------------------- tokens
    def render(self, segment: Segment) -> str:
        """The text sent for ``segment``: untrusted text cannot spell a marker."""
        if segment.trusted or segment.generated:
            return segment.text
        return defang(segment.text, self.markers, special_shape=True)

    def count_tokens(self, text: str, trusted: bool = False) -> int:
        return self._count_rendered(text if trusted else defang(text, self.markers, special_shape=True))

    def _count_rendered(self, text: str) -> int:
        cached = self._counts.get(text)
        if cached is None:
            cached = self._server_count(text)
            if cached is None:
                cached = math.ceil(len(text) / CHARS_PER_TOKEN)
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[text] = cached
        return cached

    def _server_count(self, text: str) -> int | None:
        if self._tokenizer is None:
            self._probe_tokenizer()
        if not self._tokenizer:
            return None
        count = self._tokenize(self._tokenizer, text)
        if count is None:
            raise CPUError(f"{self.base_url}{self._tokenizer} stopped answering token counts")
        return max(0, count - self._tokenizer_overhead)

    def _probe_tokenizer(self) -> None:
        """Find the tokenizer endpoint this server offers, once (an unreachable server raises, to probe again)."""
        for path, _ in TOKENIZERS:
            overhead = self._tokenize(path, "")
            if overhead is not None:
                self._tokenizer, self._tokenizer_overhead = path, overhead
                return
        self._tokenizer = NO_TOKENIZER

    def _tokenize(self, path: str, text: str) -> int | None:
        """The token count from one endpoint, or ``None`` if it does not answer with one."""
        field = dict(TOKENIZERS)[path]
        url = f"{self.base_url}{path}"
        with _transport_errors(url, self.timeout):
            response = self._client.post(url, json={field: text}, headers=self._headers)
        if response.status_code >= 500:  # the server failing, not an endpoint it lacks
            raise ServerUnavailable(f"{url} answered {response.status_code}: {_error_message(_json_or_text(response))}")
        if response.status_code != 200:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("count"), int):
            return data["count"]
        return len(data["tokens"]) if isinstance(data.get("tokens"), list) else None

    def server_chat_template(self) -> str:
        """The model's chat template as the server publishes it (llama.cpp's ``GET /props``), or ``""``."""
        url = f"{self.base_url}/props"
        with _transport_errors(url, self.timeout):
            response = self._client.get(url, headers=self._headers)
        data = _json_or_text(response) if response.status_code == 200 else None
        template = data.get("chat_template") if isinstance(data, dict) else None
        return template if isinstance(template, str) else ""

    # ---------------------------------------------------------------- context
    def load(self, segments: Sequence[Segment]) -> None:
        texts = [self.render(segment) for segment in segments]
        counts = [
            len(segment.tokens) if segment.tokens is not None else self._count_rendered(text)
            for segment, text in zip(segments, texts, strict=True)
        ]
        if sum(counts) > self.n_ctx:
            raise ContextOverflow(f"context of about {sum(counts)} tokens exceeds the window of {self.n_ctx}")
        for segment, count in zip(segments, counts, strict=True):
            count_distinct(self.counters, self._seen_keys, segment, count)
        self._prompt = "".join(texts)
        self._prompt_tokens = sum(counts)

    # ---------------------------------------------------------------- generation
    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        """Stream a completion of the context. Closing the generator closes the response."""
        if not self._prompt:
            raise CPUError("nothing to continue from: load a context first")
        if sampling.grammar_trigger:  # a lazy grammar is best-effort (Sampling): servers differ in its fields
            sampling = dataclasses.replace(sampling, grammar=None, grammar_trigger="", forced_suffix="")
        if sampling.grammar and not self.llama_extras:
            raise CPUError("a grammar needs a llama.cpp-family server (llama_extras=True)")
        if sampling.forced_prefix:
            self._prompt += sampling.forced_prefix
            yield Piece(None, sampling.forced_prefix)
        url = f"{self.base_url}/v1/completions"
        body = self._request_body(sampling)
        finish = yield from self._stream(url, body, body["prompt"], lambda choice: choice.get("text") or "")
        if finish == "stop" and sampling.grammar and sampling.forced_suffix:
            # The grammar is complete and the model ended: the suffix markup replaces the end, as in LlamaCPU.
            self._prompt += sampling.forced_suffix
            yield Piece(None, sampling.forced_suffix)

    def _stream(
        self, url: str, body: dict[str, Any], prompt: str, read: Callable[[dict[str, Any]], str]
    ) -> Generator[Piece, None, str | None]:
        """POST ``body`` and yield the text ``read`` finds in each streamed choice; return the finish reason."""
        self.last_report = {}
        n_events = n_chunks = 0
        finish = None
        started = first_chunk = time.perf_counter()
        try:
            with _transport_errors(url, self.timeout), self._completion_stream(url, body) as response:
                for event in _events(url, response):
                    n_events += 1
                    self._note_report(event)
                    for choice in event.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = read(choice)
                        if not text:
                            continue
                        if not n_chunks:
                            first_chunk = time.perf_counter()
                        n_chunks += 1
                        self._prompt += text
                        yield Piece(None, text)
        finally:
            if n_events:  # the server answered, so it evaluated the prompt
                self._account(prompt, n_chunks, started, first_chunk)
        return finish

    def _request_body(self, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": self._prompt,
            "stream": True,
            "stream_options": {"include_usage": True},  # OpenAI and vLLM report usage only when asked
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        if self.model:
            body["model"] = self.model
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self.llama_extras:
            body["cache_prompt"] = True
            body["top_k"] = sampling.top_k  # explicit: llama.cpp servers default to 40, here 0 means off
            if sampling.repeat_penalty != 1.0:
                body["repeat_penalty"] = sampling.repeat_penalty
            if sampling.dry_multiplier > 0:
                body |= {"dry_multiplier": sampling.dry_multiplier, "dry_allowed_length": sampling.dry_allowed_length}
            if sampling.grammar:
                body["grammar"] = sampling.grammar
        return body

    @contextmanager
    def _completion_stream(self, url: str, body: dict[str, Any]) -> Iterator[httpx.Response]:
        """The streamed response; a non-200 answer raises with the server's own message."""
        with self._client.stream("POST", url, json=body, headers=self._headers) as response:
            if response.status_code != 200:
                response.read()
                message = f"{url} answered {response.status_code}: {_error_message(_json_or_text(response))}"
                if response.status_code >= 500:
                    raise ServerUnavailable(message)
                overflow = response.status_code == 400 and "context" in message.lower()
                raise (ContextOverflow if overflow else CPUError)(message)
            yield response

    def _note_report(self, event: dict[str, Any]) -> None:
        for field in ("usage", "timings"):
            if isinstance(event.get(field), dict):
                self.last_report[field] = event[field]

    def _account(self, prompt: str, n_chunks: int, started: float, first_chunk: float) -> None:
        evaluated, sampled = _reported_counts(self.last_report)
        if evaluated is None:
            evaluated = self._estimate_new_tokens(prompt)
        sampled = n_chunks if sampled is None else sampled
        self.counters.tokens_evaluated += evaluated + sampled
        self.counters.tokens_sampled += sampled
        self._server_text = self._prompt
        now = time.perf_counter()
        self.counters.eval_seconds += (first_chunk if n_chunks else now) - started
        self.counters.sample_seconds += now - first_chunk if n_chunks else 0.0

    def last_prefill(self) -> tuple[int, int, bool]:
        """(prompt tokens, tokens the server prefilled, whether that figure is the server's) for the last request.

        Prefilled is what the server reported evaluating (as for ``tokens_evaluated``); a
        server that reports only ``usage.prompt_tokens``, or nothing (llama-cpp-python's
        server in a stream), is taken to have prefilled the whole prompt: an upper bound.
        """
        usage = self.last_report.get("usage") or {}
        reported_prompt = usage.get("prompt_tokens")
        prompt = reported_prompt if isinstance(reported_prompt, int) else self._prompt_tokens
        evaluated, _ = _reported_counts(self.last_report)
        return prompt, prompt if evaluated is None else evaluated, evaluated is not None

    def _estimate_new_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` past its common prefix with what the server last saw, at the prompt's density."""
        if not prompt:
            return 0
        common = os.path.commonprefix([prompt, self._server_text])  # noqa: RUF071 (characters are what we compare)
        new_chars = len(prompt) - len(common)
        density = self._prompt_tokens / len(prompt) if self._prompt_tokens else 1 / CHARS_PER_TOKEN
        return math.ceil(new_chars * density)

    def close(self) -> None:
        """Close the HTTP client (only one this CPU created: a client passed in belongs to the caller)."""
        if self._owns_client:
            self._client.close()


def _events(url: str, response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE stream, up to ``data: [DONE]``."""
    for line in response.iter_lines():
        if not line or line.startswith(":"):  # event separators and comments (keep-alive pings)
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field in ("event", "id", "retry"):
            continue
        if field == "error":  # llama.cpp's llama-server reports a failure mid-stream this way
            raise CPUError(f"{url}: the server failed mid-stream: {value[:500]}")
        if field != "data":
            raise CPUError(f"{url}: malformed server-sent event line: {line[:200]!r}")
        if value == "[DONE]":
            return
        try:
            event = json.loads(value)
        except json.JSONDecodeError:
            raise CPUError(f"{url}: malformed event data (not JSON): {value[:200]!r}") from None
        if not isinstance(event, dict):
            raise CPUError(f"{url}: malformed event data (not an object): {value[:200]!r}")
        if "error" in event:
            raise CPUError(f"{url}: the server failed mid-stream: {_error_message(event)}")
        yield event
    raise ServerUnavailable(
        f"{url}: the stream ended before data: [DONE] (the server stopped or the connection was cut)"
    )


@contextmanager
def _transport_errors(url: str, timeout: float) -> Iterator[None]:
    """httpx's transport failures as :class:`CPUError` naming the URL."""
    try:
        yield
    except httpx.ConnectError as error:
        raise ServerUnavailable(f"cannot connect to {url}: {error}") from error
    except httpx.TimeoutException as error:
        raise ServerUnavailable(f"{url} did not answer within {timeout} s ({type(error).__name__})") from error
    except httpx.TransportError as error:
        raise ServerUnavailable(f"{url}: the connection failed ({type(error).__name__}: {error})") from error


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_message(data: Any) -> str:
    """The human part of an error body: OpenAI/llama.cpp ``{"error": {"message"}}``, Ollama, FastAPI or plain text."""
    if isinstance(data, dict):
        inner = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(inner, dict) and "message" in inner:
            inner = inner["message"]
        data = inner
    text = data if isinstance(data, str) else json.dumps(data)
    return text[:500] or "(empty body)"


def _reported_counts(report: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt tokens evaluated, tokens generated) as the server reported them, ``None`` where it did not."""
    timings, usage = report.get("timings") or {}, report.get("usage") or {}
    evaluated = sampled = None
    if isinstance(timings.get("prompt_n"), int):
        evaluated = timings["prompt_n"]
    elif isinstance(usage.get("prompt_tokens"), int):
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        # Without the cached figure the server's prompt cache is unknown: leave it to the estimate.
        evaluated = usage["prompt_tokens"] - cached if isinstance(cached, int) else None
    if isinstance(timings.get("predicted_n"), int):
        sampled = timings["predicted_n"]
    elif isinstance(usage.get("completion_tokens"), int):
        sampled = usage["completion_tokens"]
    return evaluated, sampled
