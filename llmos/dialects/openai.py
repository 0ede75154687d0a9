"""The openai dialect: the chat-completions message format, for servers that template and parse themselves.

With ``/v1/chat/completions`` the server applies the model's chat template and turns
the model's calls into structured ``tool_calls`` (vLLM, SGLang, llama.cpp's server,
Ollama). This dialect is the kernel's side of that: it renders each turn as one
segment tagged with its role, plus a ``tools`` segment holding the tool list as JSON,
and :class:`~llmos.cpu.chat.ChatCPU` turns them into messages.

The model's calls come back from :class:`~llmos.cpu.chat.ChatCPU` as control pieces,
one per call, each a Hermes block (``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``),
after the message's text; the message's end is an empty control piece. So an
assistant chunk's text reads like a Hermes model's output, the store and transcripts
keep it as text, and :meth:`OpenAIDialect.split_calls` gives the kernel each call of
a message with several. Content pieces are plain text, so a model that *writes*
``<tool_call>`` in its content has not made a call: only the server's parser decides.

Not covered: ``tool_calls`` of other types than ``function``; images and other
content parts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmos.cpu.base import Piece, Segment
from llmos.cpu.chat import split_message
from llmos.dialects.base import CallClosed, Dialect, StreamEvent, StreamParser, Text, Turn, TurnEnded

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "result": "result"}


class CallsParser(StreamParser):
    """Text pieces are content; control pieces are whole calls, or (empty) the end of the message."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def feed(self, piece: Piece) -> list[StreamEvent]:
        if not piece.control:
            return [Text(piece.text)] if piece.text and not self.blocks else []
        if piece.text:
            self.blocks.append(piece.text)
            return []
        return self.finish() or [TurnEnded()]

    def finish(self) -> list[StreamEvent]:
        if not self.blocks:
            return []
        raw, self.blocks = "".join(self.blocks), []
        return [CallClosed(raw)]


class OpenAIDialect(Dialect):
    name = "openai"
    markers = ()  # the server's template is unknown: ChatCPU breaks anything shaped like a special token
    call_markers = ()
    default_system = ""  # the server's template supplies its model's default

    def render(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]], generate: bool = True) -> list[Segment]:
        out = [Segment(json.dumps(list(tools), ensure_ascii=False), tag="tools", key="tools")] if tools else []
        for turn in turns:
            if turn.role == "system" and not turn.text:
                continue
            own = turn.role == "assistant"
            out.append(Segment(turn.text, trusted=False, tag=ROLES[turn.role], key=f"t{turn.id}", generated=own))
        return out

    def parser(self, controls: bool) -> StreamParser:
        return CallsParser()

    def split_calls(self, raw: str) -> list[str]:
        return split_message(raw)[1] or [raw]

    def forced_call(self, tools: Sequence[dict[str, Any]], body_rule: str | None = None) -> dict[str, Any]:
        if body_rule is not None:
            raise NotImplementedError("a chat server takes no grammar for a call's body")
        # one tool: name it (every server honours a named tool_choice); several: any of them
        return {"tool_choice": tools[0]["name"] if len(tools) == 1 else "required"}
