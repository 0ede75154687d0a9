"""The Hermes / Qwen dialect: ``<tool_call>`` JSON, rendered through the model's own chat template.

    <|im_start|>assistant
    <tool_call>
    {"name": "calculator", "arguments": {"expression": "400/1400"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    0.2857142857
    </tool_response><|im_end|>

Rendering runs the chat template (Jinja, from the GGUF's
``tokenizer.chat_template``) with a sentinel in place of every piece of content,
then splits on the sentinels: the template's own text becomes trusted markup
(special tokens parsed) and each content piece is its own untrusted segment (the
user's words, results) or the model's exact tokens (assistant chunks). So a page
that spells ``<|im_start|>`` cannot open a turn, and re-rendering after a call
reproduces the prefix the KV cache holds.

Assistant chunks are passed to the template as plain ``content`` holding the raw
text the model wrote (its ``<tool_call>`` block included), not as structured
``tool_calls``: a template re-serialising the call would change its bytes and
break the prefix. Tool results are ``tool`` messages.

Not covered: templates that rewrite content (e.g. strip reasoning blocks from
earlier turns) may make the prefix unstable; the CPU then re-evaluates from the
first difference and counts it in ``reprefilled_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmos.cpu.base import Segment
from llmos.dialects.base import Dialect, MarkerParser, StreamParser, Turn

OPEN, CLOSE = "<tool_call>", "</tool_call>"
ENDS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")
SENTINEL = "\x00llmos:{}\x00"


def _compile(template: str):  # jinja2 is imported lazily: it is only needed for this dialect
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.filters["tojson"] = lambda value, indent=None, **_: json.dumps(value, ensure_ascii=False, indent=indent)

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template error: {message}")

    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template)


class HermesDialect(Dialect):
    name = "hermes"
    markers = (OPEN, CLOSE, "<tool_response>", "</tool_response>", "<|im_start|>", *ENDS)
    call_markers = (OPEN, CLOSE)

    def __init__(self, chat_template: str, bos_token: str = "", eos_token: str = "<|im_end|>") -> None:
        if not chat_template:
            raise ValueError("the hermes dialect needs the model's chat template (tokenizer.chat_template)")
        self.template = _compile(chat_template)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]], generate: bool = True) -> list[Segment]:
        messages: list[dict[str, str]] = []
        contents: list[Turn] = []
        for turn in turns:
            role = {"result": "tool"}.get(turn.role, turn.role)
            messages.append({"role": role, "content": SENTINEL.format(len(contents))})
            contents.append(turn)
        text = self.template.render(
            messages=messages,
            tools=[{"type": "function", "function": spec} for spec in tools] or None,
            add_generation_prompt=generate and bool(turns) and turns[-1].role in ("user", "result"),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return self._split(text, contents)

    def _split(self, text: str, contents: list[Turn]) -> list[Segment]:
        segments: list[Segment] = []
        position, markup_index = 0, 0
        for index, turn in enumerate(contents):
            sentinel = SENTINEL.format(index)
            found = text.find(sentinel, position)
            if found < 0:
                continue  # the template dropped this message (e.g. a system prompt it replaces)
            if found > position:
                segments.append(Segment(text[position:found], tag="markup", key=f"m{index}:{markup_index}"))
                markup_index += 1
            tag = {"assistant": "assistant", "result": "result"}.get(turn.role, turn.role)
            segments.append(Segment(turn.text, trusted=False, tokens=turn.tokens, tag=tag, key=f"t{turn.id}"))
            position = found + len(sentinel)
        if position < len(text):
            segments.append(Segment(text[position:], tag="markup", key=f"m{len(contents)}:end"))
        return segments

    def parser(self, controls: bool) -> StreamParser:
        # <tool_call> is an added (not control) token in Qwen's vocabulary: find it in the text
        return MarkerParser(OPEN, CLOSE, ENDS, ("<tool_response>",), controls_only=False)

    def forced_call(self, tools: Sequence[dict[str, Any]], body_rule: str | None = None) -> dict[str, str]:
        from llmos.dialects.grammar import call_grammar

        return {"grammar": call_grammar(tools, open_=OPEN + "\n", close="\n" + CLOSE, body_rule=body_rule)}
