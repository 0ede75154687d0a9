"""GBNF grammars for tool calls: one that forces a call, one that keeps a call well-formed.

:func:`call_grammar` turns tool specs (JSON schemas) into a llama.cpp GBNF grammar
whose only sentences are ``OPEN {"name": "<tool>", "arguments": {...}} CLOSE`` with
the arguments that tool declares, in declaration order, required ones always and
optional ones never (a forced call is a minimal call). Strings are bounded so a
weak model cannot run away inside one.

:func:`lazy_call_grammar` is the grammar a model's own calls follow once it has written
the call marker (a lazy grammar: prose before the marker is free). Its sentences are
``MARKER {"name": "<tool>", "arguments": {...}}`` with a declared tool, and the arguments
it declares in declaration order, each at most once, the required ones always, with values
of their types (a weak model that runs on inside a call then has to close it rather than
start a key again). It does not make a call *right*: what the values say is the model's,
and the kernel answers a wrong one with an observation. Strings are unbounded (code is
long): the kernel's step budget bounds them.

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
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{{4}})
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
    if isinstance(kind, list):  # JSON Schema's several types, e.g. ["string", "null"]
        return " | ".join(f"({_value_rule({**schema, 'type': one})})" for one in kind) or "value | object | array"
    if kind == "array":
        item = _value_rule(schema.get("items", {}))
        return f'"[" ws (({item}) (ws "," ws ({item})){{0,32}})? ws "]"'
    scalars = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "null": '"null"'}
    return scalars.get(kind if isinstance(kind, str) else "", "value | object | array")


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


def lazy_call_grammar(tools: Sequence[dict[str, Any]], marker: str) -> str:
    """The grammar of a call from its ``marker`` on (see the module docstring).

    llama.cpp feeds a lazy grammar the trigger token's own text, so the root starts
    with the marker as text; the closing marker is the CPU's (``forced_suffix``).
    """
    if not tools:
        raise ValueError("a call grammar needs at least one tool")
    rules = [f"tool{i} ::= {_lazy_tool_rule(i, spec)}" for i, spec in enumerate(tools)]
    rules += [rule for i, spec in enumerate(tools) for rule in _lazy_argument_rules(i, spec)]
    body = " | ".join(f"tool{i}" for i in range(len(tools)))
    root = f"root ::= {_literal(marker)} ({body})"
    base = _BASE.replace(f"char{{0,{MAX_STRING}}}", "char*")
    return "\n".join([root, *rules]) + base


def _lazy_tool_rule(index: int, spec: dict[str, Any]) -> str:
    name, key, arguments = _literal(json.dumps(spec["name"])), _literal('"name"'), _literal('"arguments"')
    return f'"{{" ws {key} ws ":" ws {name} ws "," ws {arguments} ws ":" ws args{index} ws "}}"'


def _lazy_argument_rules(index: int, spec: dict[str, Any]) -> list[str]:
    """``args{index}``: the tool's declared properties in declaration order, each at most once,
    the required ones always (``pairN-k``: property k; ``tailN-k``: what may follow property k-1)."""
    parameters = spec.get("parameters", {})
    properties = list(parameters.get("properties", {}).items())
    if not properties:
        return [f'args{index} ::= "{{" ws "}}"']
    required = set(parameters.get("required", [])) & {name for name, _ in properties}
    last = len(properties) - 1

    def then(k: int) -> str:  # property k, then whatever may follow it
        return f"pair{index}-{k}" + (f" tail{index}-{k + 1}" if k < last else "")

    rules = []
    for k, (name, schema) in enumerate(properties):
        rules.append(f'pair{index}-{k} ::= {_literal(json.dumps(name))} ws ":" ws ({_value_rule(schema)})')
        if k:
            pair, rest = f'ws "," ws pair{index}-{k}', f" tail{index}-{k + 1}" if k < last else ""
            rules.append(
                f"tail{index}-{k} ::= {pair}{rest}" if name in required else f"tail{index}-{k} ::= ({pair})?{rest}"
            )
    # the first property written: any optional one before the first required one, or that one
    first_required = min((k for k, (name, _) in enumerate(properties) if name in required), default=last)
    firsts = " | ".join(f"({then(k)})" for k in range(first_required + 1))
    rules.append(f'args{index} ::= "{{" ws ({firsts}){"" if required else "?"} ws "}}"')
    return rules
