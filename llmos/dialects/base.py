"""Dialects: how a model family writes a tool call and reads a result.

A dialect does three things:

1. **Render** a conversation (a list of :class:`Turn`) as :class:`Segment`\\ s. The
   dialect's own markup is a *trusted* segment (special tokens parsed); everything
   else (the user's words, tool results, pages) is content, tokenized with special
   parsing off, so no text can forge a marker.
2. **Watch the stream**: :meth:`Dialect.parser` returns a small state machine fed
   one generated :class:`Piece` at a time. It reports visible text, the moment a
   call closes (so the kernel stops decoding at once), and the end of the turn.
3. **Parse** the raw call text into a :class:`Call`, or raise :class:`CallSyntaxError`
   with a message the model can act on.

Rendering is a pure function of the turns, so rendering the conversation before and
after a step gives a common prefix, and the CPU evaluates only the new suffix.
Assistant turns carry the exact tokens the model generated, so they render back
byte for byte.

Not covered: multimodal content.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmos_errors import LlmosError

from llmos.cpu.base import Piece, Segment

Role = Literal["system", "user", "assistant", "result"]
MAX_CALL_CHARS = 32_000  # a call longer than this is a runaway, not a request


@dataclass
class Turn:
    """One entry of the conversation.

    ``assistant`` turns are chunks of model output (ending at a call or at the end of
    the answer); ``result`` turns are what a tool gave back, read by the model.
    """

    role: Role
    text: str
    id: int = 0
    tokens: tuple[int, ...] | None = None  # exact generated tokens (assistant)
    trusted: bool = True  # provenance of the content (results: the tool's trust level)
    source: str = ""  # tool name or URL, for results and pages
    ended: bool = False  # assistant: the model ended its turn in this chunk
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]
    raw: str


class CallSyntaxError(LlmosError, ValueError):
    """The model wrote a call that cannot be parsed; the message is shown to it."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class CallClosed:
    raw: str


@dataclass(frozen=True)
class TurnEnded:
    pass


@dataclass(frozen=True)
class Malformed:
    """The stream broke the dialect's rules (e.g. a forged result marker)."""

    message: str
    raw: str = ""


StreamEvent = Text | CallClosed | TurnEnded | Malformed


class StreamParser(ABC):
    in_call: bool = False  # inside an open call now (the kernel's loop guard watches only there)

    @abstractmethod
    def feed(self, piece: Piece) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]:
        """The stream stopped (token budget): report what is left."""
        return []


class MarkerParser(StreamParser):
    """A call-open / call-close / end-of-turn state machine.

    With ``controls_only`` (special-token dialects on a backend that reports control
    tokens), only control tokens count as markers, so plain text that spells
    ``<|call|>`` is just text. Otherwise markers are found in the text, holding back
    a possible partial marker until the next piece decides it.
    """

    def __init__(
        self, open_: str, close: str, ends: Sequence[str], forbidden: Sequence[str] = (), controls_only: bool = False
    ) -> None:
        self.open, self.close, self.ends, self.forbidden = open_, close, tuple(ends), tuple(forbidden)
        self.controls_only = controls_only
        self.in_call = False
        self.buffer = ""  # the call's text so far
        self.pending = ""  # text held back because it may be the start of a marker

    def feed(self, piece: Piece) -> list[StreamEvent]:
        if not self.controls_only:
            return self._scan(piece.text)
        if piece.control:
            return self._marker(piece.text)
        return self._text(piece.text)

    def _text(self, text: str) -> list[StreamEvent]:
        if self.in_call:
            self.buffer += text
            if len(self.buffer) > MAX_CALL_CHARS:
                raw, self.buffer, self.in_call = self.buffer, "", False
                return [Malformed(f"the call is longer than {MAX_CALL_CHARS} characters", raw[:200])]
            return []
        return [Text(text)] if text else []

    def _marker(self, marker: str) -> list[StreamEvent]:
        if marker == self.open and not self.in_call:
            self.in_call, self.buffer = True, ""
            return []
        if marker == self.close and self.in_call:
            raw, self.buffer, self.in_call = self.buffer, "", False
            return [CallClosed(raw)]
        if marker in self.ends:
            if self.in_call:
                raw, self.buffer, self.in_call = self.buffer, "", False
                return [Malformed(f"the call was not closed with {self.close}", raw)]
            return [TurnEnded()]
        if marker in self.forbidden or marker in (self.open, self.close):
            return [Malformed(f"{marker} is not allowed here: only the kernel writes it")]
        return []  # other control tokens carry no meaning in this dialect

    def _scan(self, text: str) -> list[StreamEvent]:
        """Text-only backends: split markers out of the text stream."""
        self.pending += text
        markers = (self.open, self.close, *self.ends, *self.forbidden)
        if not any(m[0] in self.pending for m in markers):  # the common case: plain text, no marker can start
            text, self.pending = self.pending, ""
            return self._text(text)
        events: list[StreamEvent] = []
        while self.pending:
            found = [(self.pending.find(m), m) for m in markers if m in self.pending]
            if found:
                index, marker = min(found)
                events += self._text(self.pending[:index])
                self.pending = self.pending[index + len(marker) :]
                events += self._marker(marker)
                continue
            keep = max((k for m in markers for k in range(1, len(m)) if self.pending.endswith(m[:k])), default=0)
            events += self._text(self.pending[: len(self.pending) - keep])
            self.pending = self.pending[len(self.pending) - keep :]
            break
        return events

    def finish(self) -> list[StreamEvent]:
        events = self._text(self.pending)
        self.pending = ""
        if self.in_call:
            raw, self.buffer, self.in_call = self.buffer, "", False
            events.append(Malformed(f"the call was cut off before {self.close}", raw))
        return events


def parse_json_call(raw: str) -> Call:
    """Parse ``{"name": ..., "arguments": {...}}``, explaining what is wrong."""
    text = raw.strip()
    if not text:
        raise CallSyntaxError('the call is empty; write {"name": "<tool>", "arguments": {...}}')
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CallSyntaxError(f"the call is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise CallSyntaxError('the call must be a JSON object with a string "name"')
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models double-encode arguments
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise CallSyntaxError('"arguments" must be a JSON object') from None
    if not isinstance(arguments, dict):
        raise CallSyntaxError('"arguments" must be a JSON object')
    return Call(name=value["name"], arguments=arguments, raw=raw)


class Dialect(ABC):
    """How turns become segments and how generated text becomes calls."""

    name: str = ""
    markers: tuple[str, ...] = ()  # special strings that untrusted text must never produce
    call_markers: tuple[str, ...] = ()  # what opens and closes a call: never an end of generation
    default_system: str = ""  # the system prompt when the caller gives none

    @abstractmethod
    def render(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]], generate: bool = True) -> list[Segment]:
        """Segments for the conversation; with ``generate``, ending where the model continues."""

    @abstractmethod
    def parser(self, controls: bool) -> StreamParser:
        """A fresh stream parser; ``controls`` says the backend reports control tokens."""

    def parse(self, raw: str) -> Call:
        return parse_json_call(raw)

    def split_calls(self, raw: str) -> list[str]:
        """The calls one closed call block holds, each to :meth:`parse` (one, unless the dialect says more)."""
        return [raw]

    def forced_call(self, tools: Sequence[dict[str, Any]], body_rule: str | None = None) -> dict[str, Any]:
        """Sampling settings that force the next output to be one well-formed call.

        Returns fields of :class:`~llmos.cpu.base.Sampling` (``grammar`` and, for
        special-token markers, ``forced_prefix``/``forced_suffix``).
        """
        raise NotImplementedError(f"the {self.name} dialect cannot force a call")

    def call_grammar(self, tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Sampling settings that keep the model's own calls well-formed once it opens one (a lazy
        grammar), or ``{}`` where the dialect has none: its calls are checked only when parsed."""
        return {}
