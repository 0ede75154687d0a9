"""Chat completions over HTTP: the server templates the conversation and parses the model's calls.

:class:`ChatCPU` talks to any server that offers ``POST /v1/chat/completions`` with
``stream: true`` and ``tools`` (vLLM, SGLang, llama.cpp's server, llama-cpp-python's
server, Ollama, a hosted API). It speaks the :mod:`llmos.dialects.openai` dialect: the
kernel's turns arrive as segments tagged with their role, and the model's calls leave
as control pieces, one Hermes block per call. Everything about the connection
(timeouts, errors naming the URL, SSE parsing, token counts, usage accounting) is
:class:`~llmos.cpu.http.HttpCPU`'s.

Contract (in addition to :mod:`llmos.cpu.base` and :class:`~llmos.cpu.http.HttpCPU`)
-----------------------------------------------------------------------------------
* ``load(segments)``: a ``tools`` segment becomes the request's ``tools``; each other
  segment one message. An assistant segment's Hermes blocks become its ``tool_calls``
  (ids ``call_1``, ``call_2``… in order of appearance) and the ``result`` segments that
  follow answer them in order as ``tool`` messages. A call left without a result (a
  budget ran out between two calls of one message) is answered "no result", as the
  API requires. Content that is not the model's own is sent with anything shaped like
  a special token broken (the server tokenizes the templated prompt with special
  parsing on), so a page cannot forge ``<|im_start|>``.
* ``generate(sampling)``: content deltas are pieces as they arrive; ``tool_calls``
  deltas are gathered by index (a name once, argument fragments appended; a server that
  sends arguments as an object has them serialised) and each complete call is one
  control piece when the stream ends, so a message with several calls gives the kernel
  all of them. The end of a message without calls is an empty control piece.
  ``sampling.tool_choice`` is sent as ``"required"`` or a named function.
* KV continuity is the server's (its prefix cache); the messages of one conversation
  render to a growing prefix as long as the server's template is stable.

Not covered: non-streaming servers, ``n > 1``, logprobs, structured outputs,
``parallel_tool_calls`` tuning (the server's default applies).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Generator, Sequence
from typing import Any

from llmos.cpu.base import CPUError, Piece, Sampling, Segment
from llmos.cpu.http import HttpCPU

NO_RESULT = "error: no result (the run stopped before this call ran)"
# the model's calls travel as Hermes blocks in the text of its chunks (see llmos.dialects.openai)
OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


def call_block(name: str, arguments: str) -> str:
    """The text of one call: its arguments as the server sent them (a model's broken JSON stays broken)."""
    try:
        value: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        value = arguments  # parse_json_call tells the model its arguments are not an object
    return OPEN + json.dumps({"name": name, "arguments": value}, ensure_ascii=False) + CLOSE


def split_message(text: str) -> tuple[str, list[str]]:
    """An assistant chunk's text as (content, the JSON of each call), in order."""
    calls = BLOCK.findall(text)
    return BLOCK.sub("", text), calls


class ChatCPU(HttpCPU):
    """A model served over OpenAI-compatible HTTP (``/v1/chat/completions``, streaming, native tools)."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.name = f"http-chat:{self.model or self.base_url}"
        self._messages: list[dict[str, Any]] = []
        self._tools: list[dict[str, Any]] = []

    def render(self, segment: Segment) -> str:
        if segment.trusted or segment.generated or segment.tag == "tools":
            return segment.text
        return super().render(segment)

    # ---------------------------------------------------------------- context
    def load(self, segments: Sequence[Segment]) -> None:
        super().load(segments)  # the size check, the counters and the text the prefix estimate compares
        self._tools, self._messages = [], []
        pending: deque[str] = deque()
        n_calls = 0
        for segment in segments:
            if segment.tag == "tools":
                self._tools = [{"type": "function", "function": spec} for spec in json.loads(segment.text)]
                continue
            text = self.render(segment)
            if segment.tag == "result":
                if pending:
                    self._messages.append({"role": "tool", "tool_call_id": pending.popleft(), "content": text})
                else:  # a result no call of this message asked for (an error about a malformed call)
                    self._messages.append({"role": "user", "content": text})
                continue
            self._answer_all(pending)
            if segment.tag != "assistant":
                self._messages.append({"role": segment.tag, "content": text})
                continue
            content, calls = split_message(text)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = []
                for raw in calls:
                    n_calls += 1
                    message["tool_calls"].append(_tool_call(f"call_{n_calls}", raw))
                    pending.append(f"call_{n_calls}")
            self._messages.append(message)
        self._answer_all(pending)

    def _answer_all(self, pending: deque[str]) -> None:
        while pending:
            self._messages.append({"role": "tool", "tool_call_id": pending.popleft(), "content": NO_RESULT})

    # ---------------------------------------------------------------- generation
    def generate(self, sampling: Sampling) -> Generator[Piece, None, None]:
        """Stream one assistant message. Closing the generator closes the response."""
        if not self._messages:
            raise CPUError("nothing to continue from: load a context first")
        url = f"{self.base_url}/v1/chat/completions"
        calls: dict[int, dict[str, str]] = {}

        def read(choice: dict[str, Any]) -> str:
            delta = choice.get("delta") or {}
            _gather(calls, delta.get("tool_calls") or [])
            return delta.get("content") or ""

        finish = yield from self._stream(url, self._chat_body(sampling), self._prompt, read)
        for index in sorted(calls):
            block = call_block(calls[index]["name"], calls[index]["arguments"])
            self._prompt += block
            yield Piece(None, block, control=True)
        if not calls and finish == "stop":
            yield Piece(None, "", control=True)

    def _chat_body(self, sampling: Sampling) -> dict[str, Any]:
        body = self._request_body(sampling)
        del body["prompt"]
        body["messages"] = self._messages
        if self._tools:
            body["tools"] = self._tools
        if sampling.tool_choice == "required":
            body["tool_choice"] = "required"
        elif sampling.tool_choice:
            body["tool_choice"] = {"type": "function", "function": {"name": sampling.tool_choice}}
        return body


def _tool_call(call_id: str, raw: str) -> dict[str, Any]:
    """A call block's JSON as the API's ``tool_calls`` entry (arguments as a JSON string)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {}
    value = value if isinstance(value, dict) else {}
    arguments = value.get("arguments", {})
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": str(value.get("name", "")), "arguments": encoded}}


def _gather(calls: dict[int, dict[str, str]], deltas: list[dict[str, Any]]) -> None:
    """Fold streamed ``tool_calls`` deltas into whole calls, by index."""
    for delta in deltas:
        index = delta.get("index")
        call = calls.setdefault(index if isinstance(index, int) else len(calls), {"name": "", "arguments": ""})
        function = delta.get("function") or {}
        if function.get("name") and not call["name"]:
            call["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # Ollama sends the object itself
            call["arguments"] = json.dumps(arguments, ensure_ascii=False)
        elif isinstance(arguments, str):
            call["arguments"] += arguments
