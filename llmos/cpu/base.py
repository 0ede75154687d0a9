"""The CPU interface: what the kernel needs from a model backend.

The kernel describes the whole context as a list of :class:`Segment`\\ s (system
prompt, turns, tool results, pages) and asks the CPU to :meth:`CPU.load` it, then
to :meth:`CPU.generate` from it. A backend keeps whatever it already evaluated
(the KV cache) and evaluates only what differs: that is KV continuity.

Contract
--------
* ``load(segments)`` makes the context equal to ``segments``. Tokens already in the
  KV cache that match a prefix of the new context are reused; from the first
  difference on, the backend evaluates again and counts it.
* ``generate(sampling)`` yields :class:`Piece`\\ s one token at a time. Each yielded
  token becomes part of the context. Closing the generator (``.close()`` or leaving
  a ``for`` loop) stops decoding at once: no further token is computed.
* ``segment.trusted`` decides special-token parsing: untrusted text (pages, tool
  output) is tokenized with special-token parsing *off*, so it can never produce a
  control token. Backends that cannot tokenize that way must neutralise markers.
* Counters: ``tokens_evaluated`` (every token run through the model, prefill and
  decode), ``tokens_sampled``, ``context_tokens`` (distinct tokens that were ever
  part of a context, the denominator of the recompute ratio) and times. A segment's
  tokens count as distinct once per ``key`` (a segment that grows counts its
  growth); segments without a key count every time they are loaded; generated
  tokens count when generated, so segments with preset ``tokens`` do not count.

Not covered: batching several sequences, speculative decoding, multimodal input.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmos_errors import LlmosError


@dataclass(frozen=True)
class Segment:
    """A run of context text with one trust level.

    ``tokens`` may carry the exact tokens (e.g. what the model generated), so that
    re-rendering a conversation reproduces the KV cache byte for byte.
    """

    text: str
    trusted: bool = True
    tokens: tuple[int, ...] | None = None
    tag: str = ""  # what it is (system, user, call, result, page, stub): for paging and logs
    key: str = ""  # stable identity across renders; counted once into ``context_tokens``
    generated: bool = False  # the model's own output: sent back exactly as it was written, never defanged


@dataclass(frozen=True)
class Piece:
    """One generated token: its id (``None`` for text-only backends) and its text."""

    token: int | None
    text: str
    control: bool = False  # a control token (a special marker), not plain text


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repeat_penalty: float = 1.0
    # DRY (llama.cpp's "don't repeat yourself"): a token that would extend a repeat of text generated
    # earlier in this step, longer than dry_allowed_length tokens, loses dry_multiplier * 1.75^(excess)
    # logits; newlines, ':', '"' and '*' end a repeat. 0 is off. It breaks greedy loops in prose.
    dry_multiplier: float = 0.0
    dry_allowed_length: int = 2
    seed: int = 0
    max_tokens: int = 512
    grammar: str | None = None  # GBNF, for backends that support it
    # A lazy grammar: it applies from this control token on (a call's marker), text before it is
    # free. It is best-effort: a backend that cannot apply it decodes without it.
    grammar_trigger: str = ""
    forced_prefix: str = ""  # markup inserted before sampling (a forced call's opening marker)
    forced_suffix: str = ""  # markup that replaces end-of-generation once the grammar is complete
    # The kernel keeps the model's own calls well-formed with its dialect's lazy call grammar
    # (Dialect.call_grammar) where the dialect has one; False decodes calls unconstrained.
    constrain_calls: bool = True
    stop: tuple[str, ...] = ()
    tool_choice: str = ""  # native function calling: "" (the model decides), "required" or a tool's name


@dataclass
class Counters:
    tokens_evaluated: int = 0
    tokens_sampled: int = 0
    context_tokens: int = 0
    reprefilled_tokens: int = 0  # evaluated again because the prefix changed
    restored_tokens: int = 0  # put back into the KV cache from a saved state, not evaluated
    eval_seconds: float = 0.0
    sample_seconds: float = 0.0

    def recompute_ratio(self) -> float:
        return self.tokens_evaluated / self.context_tokens if self.context_tokens else 1.0

    def as_dict(self) -> dict[str, float]:
        data = dict(vars(self))
        data["recompute_ratio"] = round(self.recompute_ratio(), 4)
        return data


def count_distinct(counters: Counters, seen: dict[str, int], segment: Segment, n_tokens: int) -> None:
    """Add a loaded segment's new tokens to ``counters.context_tokens`` (the rule in the module docstring)."""
    if segment.tokens is not None:
        return  # generated tokens were counted when they were generated
    if not segment.key:
        counters.context_tokens += n_tokens
        return
    before = seen.get(segment.key, 0)
    if n_tokens > before:
        counters.context_tokens += n_tokens - before
        seen[segment.key] = n_tokens


# ``<|im_start|>``, ``<|eot_id|>``, ``<|call|>``: the shape most vocabularies give their control tokens
SPECIAL_SHAPE = re.compile(r"<\|[A-Za-z0-9_./-]{1,40}\|>")


def defang(text: str, markers: Sequence[str], special_shape: bool = False) -> str:
    """Break markers in untrusted text, for text that is tokenized with special parsing on (or read as text).

    A zero-width joiner goes after the first character of each marker, so the text
    still reads the same to a person but no longer matches the marker or the special
    token. With ``special_shape``, anything shaped like ``<|name|>`` is broken too (a
    server's vocabulary is unknown to its client).
    """
    patterns = [re.escape(m) for m in sorted(markers, key=len, reverse=True)]
    if special_shape:
        patterns.append(SPECIAL_SHAPE.pattern)
    if not patterns:
        return text
    return re.sub("|".join(patterns), lambda m: m.group(0)[0] + "\u200d" + m.group(0)[1:], text)


class CPUError(LlmosError, RuntimeError):
    """The backend failed (a crashed server, a model that will not load)."""


class ContextOverflow(CPUError):
    """The context would exceed the model's window."""


@runtime_checkable
class CPU(Protocol):
    name: str
    n_ctx: int
    counters: Counters

    def load(self, segments: Sequence[Segment]) -> None: ...

    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]: ...

    def count_tokens(self, text: str, trusted: bool = False) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class TokenCPU(CPU, Protocol):
    """A CPU that works in token ids and owns its KV cache (:class:`~llmos.cpu.llama.LlamaCPU`).

    The kernel asks this capability (``isinstance(cpu, TokenCPU)``) before it reads control
    tokens or keeps call markers from ending generation; the pager before it edits, saves or
    restores spans of the cache. Text backends (HTTP servers, scripted CPUs) have none of it:
    the pager then pages by re-rendering, and the backend re-evaluates what changed.
    """

    tokens: list[int]
    n_evaluated: int
    reports_controls: bool
    not_end: set[int]
    add_bos: bool
    bos: int

    def token_id(self, text: str) -> int | None: ...

    def segment_tokens(self, segment: Segment) -> tuple[int, ...]: ...

    def replace_span(self, start: int, end: int, tokens: Sequence[int]) -> bool: ...

    def save_span(self, start: int, end: int) -> bytes: ...

    def restore_span(self, data: bytes, tokens: Sequence[int], saved_start: int) -> None: ...


@dataclass
class CPUInfo:
    name: str
    n_ctx: int
    can_shift: bool = False
    extra: dict[str, object] = field(default_factory=dict)
