"""GBNF grammars that force a well-formed tool call.

:func:`call_grammar` turns tool specs (JSON schemas) into a llama.cpp GBNF grammar
whose only sentences are ``OPEN {"name": "<tool>", "arguments": {...}} CLOSE`` with
the arguments that tool declares, in declaration order, required ones always and
optional ones never (a forced call is a minimal call). Strings are bounded so a
weak model cannot run away inside one.

Not covered: nested objects and arrays of objects in arguments (they fall back to
a generic bounded JSON value), ``anyOf`` beyond the first option, regex patterns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

MAX_STRING = 200

_BASE = rf"""
ws ::= [ ]?
string ::= "\"" char{{0,{MAX_STRING}}} "\""
char ::= [^"\\\x00-\x1f] | "\\" ["\\/bfnrt]
integer ::= "-"? [0-9]{{1,15}}
number ::= "-"? [0-9]{{1,15}} ("." [0-9]{{1,10}})?
boolean ::= "true" | "false"
value ::= string | number | boolean | "null"
array ::= "[" ws (value (ws "," ws value){{0,32}})? ws "]"
object ::= "{{" ws (string ws ":" ws value (ws "," ws string ws ":" ws value){{0,16}})? ws "}}"
"""


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal has JSON's escaping


def _value_rule(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(_literal(json.dumps(v)) for v in schema["enum"])
    if schema.get("anyOf"):
        return _value_rule(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "array":
        item = _value_rule(schema.get("items", {}))
        return f'"[" ws (({item}) (ws "," ws ({item})){{0,32}})? ws "]"'
    return {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
        kind or "", "value | object | array"
    )


def tool_rule(spec: dict[str, Any]) -> str:
    parameters = spec.get("parameters", {})
    properties = parameters.get("properties", {})
    required = [name for name in properties if name in parameters.get("required", [])]
    parts = [_literal('{"name": ' + json.dumps(spec["name"]) + ', "arguments": {')]
    for index, name in enumerate(required):
        prefix = ", " if index else ""
        parts.append(_literal(f"{prefix}{json.dumps(name)}: "))
        parts.append(f"({_value_rule(properties[name])})")
    parts.append(_literal("}}"))
    return " ".join(parts)


def call_grammar(
    tools: Sequence[dict[str, Any]], open_: str = "", close: str = "", body_rule: str | None = None
) -> str:
    """A grammar whose root is exactly one call to one of ``tools``, between text markers.

    ``body_rule`` replaces the call body (tests use it to force particular arguments).
    Special-token markers cannot be written in a grammar for this llama.cpp; dialects
    that use them pass no markers here and let the CPU insert them (see
    :attr:`llmos.cpu.base.Sampling.forced_prefix`).
    """
    if not tools and body_rule is None:
        raise ValueError("a call grammar needs at least one tool")
    rules = [f"tool{i} ::= {tool_rule(spec)}" for i, spec in enumerate(tools)]
    body = body_rule or " | ".join(f"tool{i}" for i in range(len(tools)))
    markers = [_literal(open_)] if open_ else []
    root = " ".join(["root ::=", *markers, f"({body})", *([_literal(close)] if close else [])])
    return "\n".join([root, *rules]) + _BASE
