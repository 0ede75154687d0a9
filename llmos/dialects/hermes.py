"""The chat-template dialect: a model's own chat template, with Hermes-style tool calls.

Every model with a chat template (``tokenizer.chat_template`` in its GGUF) is prompted in
its own format: this dialect renders the template, so a plain chat through llmos is token
for token what the model's authors (and llama-cpp-python's ``create_chat_completion``) feed
it. Tools follow the Hermes / Qwen convention::

    <|im_start|>assistant
    <tool_call>
    {"name": "calculator", "arguments": {"expression": "400/1400"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    0.2857142857
    </tool_response><|im_end|>

* **Tools.** A template that has this tool syntax (it renders the ``tools`` list and
  mentions ``<tool_call>``: Qwen2.5, Hermes) gets the tools and renders them itself. Any
  other template (a plain ChatML one such as SmolLM2's) gets them in the system message,
  in ``<tools>`` with the instruction to answer in ``<tool_call>``.
* **Results.** A template that mentions ``<tool_response>`` renders ``tool`` messages
  itself; for the others a result is a user message wrapped in ``<tool_response>``.
* **Stream.** A call closes at ``</tool_call>``; the turn ends at an end-of-generation
  token, or where the model starts writing ``<tool_response>`` itself (small models
  imitate the result they just read; what they would invent is never read).
* **Trust.** Rendering runs the template with a sentinel in place of every piece of
  content and splits on the sentinels: the template's own text becomes trusted markup
  (special tokens parsed), each content piece its own untrusted segment (special parsing
  off), so a page that spells ``<|im_start|>`` cannot open a turn. The call and result
  markers are plain text in most vocabularies, so they are broken in content with a
  zero-width joiner (:func:`~llmos.cpu.base.defang`): a page cannot show the model a
  call or a result it did not get. The model's own chunks are never defanged.
* **KV continuity.** Assistant chunks are passed to the template as plain ``content``
  holding the raw text the model wrote (its ``<tool_call>`` block included), never as
  structured ``tool_calls`` that a template would re-serialise. A chunk that ended at an
  end-of-generation token gives that token back to the template, which writes it again
  as markup (the same token), so the KV cache's prefix holds. A last chunk that was cut
  (a budget) is continued where it stopped: the render ends at its content.
* **The template is untrusted input** (CVE-2024-34359): it runs in Jinja's immutable
  sandbox; one that fails or reaches for something unsafe raises
  :class:`ChatTemplateError` when the dialect is made, not mid-conversation.

Not covered: templates with another tool syntax (Llama 3.1's ``<|python_tag|>``,
Mistral's ``[TOOL_CALLS]``) get the Hermes convention in the system message instead;
templates that rewrite content (e.g. strip reasoning from earlier turns) may make the
prefix unstable, and the CPU then re-evaluates from the first difference (counted in
``reprefilled_tokens``).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from llmos.cpu.base import CPUError, Segment, defang
from llmos.dialects.base import Dialect, MarkerParser, StreamParser, Turn

OPEN, CLOSE = "<tool_call>", "</tool_call>"
RESPONSE, RESPONSE_END = "<tool_response>", "</tool_response>"
TEXT_MARKERS = (OPEN, CLOSE, RESPONSE, RESPONSE_END, "<tools>", "</tools>")
DEFAULT_ENDS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>")
SENTINEL = "\x00llmos:{}\x00"
PROBE = "llmos_probe_7f3a"

TOOLS_SYSTEM = """You can call functions to help with the user's request. They are described in JSON \
within <tools></tools>:
<tools>
{tools}
</tools>
To call one, answer with a JSON object holding its name and arguments within <tool_call></tool_call>:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>
The result comes back within <tool_response></tool_response>."""


class ChatTemplateError(CPUError):
    """The model's chat template does not compile or render (or reaches for something unsafe)."""


def compile_template(source: str):
    """The template in Jinja's immutable sandbox, with the helpers chat templates expect."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise
    environment.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return environment.from_string(source)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from None


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # transformers' tojson: not HTML-escaped, unlike Jinja's own
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the conversation: {message}")


class HermesDialect(Dialect):
    name = "hermes"
    call_markers = (OPEN, CLOSE)
    default_system = ""  # no system prompt of ours: the template's own default applies

    def __init__(
        self,
        chat_template: str,
        bos_token: str = "",
        eos_token: str = "<|im_end|>",
        end_markers: Sequence[str] = (),
    ) -> None:
        if not chat_template:
            raise ValueError("the hermes dialect needs the model's chat template (tokenizer.chat_template)")
        self.source = chat_template
        self.template = compile_template(chat_template)
        self.bos_token, self.eos_token = bos_token, eos_token
        self.ends = tuple(dict.fromkeys(end for end in [*end_markers, eos_token, *DEFAULT_ENDS] if end))
        self.markers = (*TEXT_MARKERS, "<|im_start|>", *self.ends)
        self.native_results = RESPONSE in chat_template
        self._run([{"role": "user", "content": "hi"}], None, True)  # a template that fails, fails here
        self.native_tools = OPEN in chat_template and self._renders_tools()

    def _run(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, generate: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=generate,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template failed: {exc}") from None

    def _renders_tools(self) -> bool:
        spec = {"type": "function", "function": {"name": PROBE, "description": "", "parameters": {}}}
        return PROBE in self._run([{"role": "user", "content": "hi"}], [spec], True)

    # ---------------------------------------------------------------- render
    def render(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]], generate: bool = True) -> list[Segment]:
        messages: list[dict[str, Any]] = []
        contents: list[Segment] = []
        for turn in turns:
            segment = self._content(turn, tools)
            if segment is None:
                continue
            sentinel = SENTINEL.format(len(contents))
            contents.append(segment)
            if turn.role == "assistant" and messages and messages[-1]["role"] == "assistant":
                messages[-1]["content"] += sentinel  # a chunk continuing a cut one: the same message
            elif turn.role == "result" and not self.native_results:
                messages.append({"role": "user", "content": f"{RESPONSE}\n{sentinel}\n{RESPONSE_END}"})
            else:
                messages.append({"role": {"result": "tool"}.get(turn.role, turn.role), "content": sentinel})
        last = turns[-1] if turns else None
        continuing = last is not None and last.role == "assistant" and not last.ended
        specs = [{"type": "function", "function": spec} for spec in tools] if self.native_tools and tools else None
        prompt = generate and last is not None and last.role in ("user", "result")
        text = self._run(messages, specs, prompt)
        return self._split(text, contents, cut_after_last=generate and continuing)

    def _content(self, turn: Turn, tools: Sequence[dict[str, Any]]) -> Segment | None:
        key = f"t{turn.id}"
        if turn.role == "system":
            text = turn.text
            if tools and not self.native_tools:
                block = TOOLS_SYSTEM.format(
                    tools="\n".join(_tojson({"type": "function", "function": s}) for s in tools)
                )
                text = f"{text}\n\n{block}" if text else block
            # the operator's words: special parsing off, but the tool instructions keep their markers
            return Segment(text, trusted=False, tag="system", key=key) if text else None
        if turn.role == "assistant":
            text, tokens = turn.text, turn.tokens
            end = next((e for e in self.ends if turn.ended and text.endswith(e)), None)
            if end is not None:  # the template writes the end of the turn itself
                text = text[: -len(end)]
                tokens = tokens[:-1] if tokens else tokens
            return Segment(text, trusted=False, tokens=tokens, tag="assistant", key=key, generated=True)
        tag = "result" if turn.role == "result" else turn.role
        return Segment(defang(turn.text, TEXT_MARKERS), trusted=False, tag=tag, key=key)

    def _split(self, text: str, contents: list[Segment], cut_after_last: bool) -> list[Segment]:
        segments: list[Segment] = []
        position, after = 0, "start"
        for index, content in enumerate(contents):
            sentinel = SENTINEL.format(index)
            found = text.find(sentinel, position)
            if found < 0:
                continue  # the template dropped this message
            if found > position:
                segments.append(Segment(text[position:found], tag="markup", key=f"m:{after}"))
            segments.append(content)
            position, after = found + len(sentinel), content.key
        if position < len(text) and not cut_after_last:
            segments.append(Segment(text[position:], tag="markup", key=f"m:{after}"))
        if any("\x00llmos:" in s.text for s in segments if s.tag == "markup"):
            # content would be tokenized as trusted markup: never render it
            raise ChatTemplateError("the model's chat template writes a message twice; llmos cannot keep it apart")
        return segments

    # ---------------------------------------------------------------- stream
    def parser(self, controls: bool) -> StreamParser:
        # <tool_call> is plain text (or an added, non-control token) in these vocabularies: find it in the text.
        # A model that starts writing a result itself has finished its turn: what it would invent is not read.
        return MarkerParser(OPEN, CLOSE, (*self.ends, RESPONSE), controls_only=False)

    def forced_call(self, tools: Sequence[dict[str, Any]], body_rule: str | None = None) -> dict[str, Any]:
        from llmos.dialects.grammar import call_grammar

        return {"grammar": call_grammar(tools, open_=OPEN + "\n", close="\n" + CLOSE, body_rule=body_rule)}
