"""The generic dialect: plain-text markers for models that have no tool format.

    {system}
    Tools:
    calculator(expression: string) - Evaluate an arithmetic expression.
    To use a tool write <tool>{"name": "…", "arguments": {…}}</tool>; the result follows in <result>…</result>.

    User: What is 400/1400?
    Assistant: <tool>{"name": "calculator", "arguments": {"expression": "400/1400"}}</tool><result>0.2857142857</result>
    It is about 0.29.

Markers are ordinary text here, so protection is textual: markers that appear in
content (the user's words, results, pages) are broken with a zero-width joiner
(:func:`~llmos.dialects.base.defang`) before rendering. ``forced_call`` returns a
grammar that makes the next output one well-formed call, which is how a model that
has never seen a tool format can still drive the loop. The turn ends at the model's
end-of-sequence token or when it starts a new ``User:`` line.

Not covered: chat templates (use the hermes dialect for models that have one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmos.cpu.base import Segment, defang
from llmos.dialects.base import Dialect, MarkerParser, StreamParser, Turn
from llmos.dialects.llmos import DEFAULT_SYSTEM, render_system

OPEN, CLOSE, RESULT, RESULT_END = "<tool>", "</tool>", "<result>", "</result>"
USER_LINE, ASSISTANT_LINE = "\nUser:", "\nAssistant:"
MARKERS = (OPEN, CLOSE, RESULT, RESULT_END, USER_LINE, ASSISTANT_LINE)
HOW_TO_CALL = (
    f'To use a tool write {OPEN}{{"name": "…", "arguments": {{…}}}}{CLOSE}; '
    f"the result follows in {RESULT}…{RESULT_END}."
)
DEFAULT_GENERIC_SYSTEM = "You are a helpful assistant."


class GenericDialect(Dialect):
    name = "generic"
    markers = MARKERS
    call_markers = (OPEN, CLOSE)
    default_system = DEFAULT_SYSTEM

    def render(self, turns: Sequence[Turn], tools: Sequence[dict[str, Any]], generate: bool = True) -> list[Segment]:
        out: list[Segment] = []
        for turn in turns:
            key = f"t{turn.id}"
            if turn.role == "system":
                text = render_system(turn.text, tools) + ("\n" + HOW_TO_CALL if tools else "")
                out.append(Segment(defang(text, MARKERS[2:]), trusted=False, tag="system", key=key))
            elif turn.role == "user":
                out.append(Segment("\n" + USER_LINE.strip() + " ", trusted=False, tag="markup", key=f"{key}:o"))
                out.append(Segment(defang(turn.text, MARKERS), trusted=False, tag="user", key=key))
                out.append(Segment(ASSISTANT_LINE, trusted=False, tag="markup", key=f"{key}:gen"))
            elif turn.role == "assistant":
                out.append(
                    Segment(turn.text, trusted=False, tokens=turn.tokens, tag="assistant", key=key, generated=True)
                )
            else:
                out.append(Segment(RESULT, trusted=False, tag="markup", key=f"{key}:o"))
                out.append(Segment(defang(turn.text, MARKERS), trusted=False, tag="result", key=key))
                out.append(Segment(RESULT_END, trusted=False, tag="markup", key=f"{key}:c"))
        return out

    def parser(self, controls: bool) -> StreamParser:
        return MarkerParser(OPEN, CLOSE, (USER_LINE,), (RESULT, RESULT_END), controls_only=False)

    def forced_call(self, tools: Sequence[dict[str, Any]], body_rule: str | None = None) -> dict[str, Any]:
        from llmos.dialects.grammar import call_grammar

        return {"grammar": call_grammar(tools, open_=OPEN, close=CLOSE, body_rule=body_rule)}
