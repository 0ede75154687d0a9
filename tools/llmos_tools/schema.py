"""JSON schemas from type hints and docstrings, and argument validation.

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``list[T]``,
``dict[str, T]``, ``Literal[...]``, ``T | None`` and parameters with defaults.
Anything else is a programming error in the tool and raises ``TypeError`` when the
tool is defined, not when the model calls it.

Docstrings are read Google-style: the first paragraph is the description, and an
``Args:`` section gives each parameter's description.

Validation is deliberately strict and explains itself: the messages are read by a
model that must fix its call. Ints are accepted where floats are expected; nothing
else is coerced.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

from llmos_tools.errors import ToolError

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
MAX_ARGUMENT_CHARS = 200_000  # a call bigger than this is a runaway model, not a request


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one annotation."""
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple) and args:
        return {"type": "array", "items": type_schema(args[0])}
    if origin is dict and len(args) == 2 and args[0] is str:
        return {"type": "object", "additionalProperties": type_schema(args[1])}
    if origin in (types.UnionType, typing.Union):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return type_schema(members[0])
        return {"anyOf": [type_schema(a) for a in members]}
    if annotation in (list, dict):
        return {"type": "array" if annotation is list else "object"}
    raise TypeError(f"unsupported tool parameter annotation: {annotation!r}")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {param: description})."""
    doc = inspect.cleandoc(doc or "")
    head, _, rest = doc.partition("\nArgs:\n")
    description = head.split("\n\n")[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        match = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if match and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current and line.strip() and line.startswith(" "):
            params[current] += " " + line.strip()
        elif line.strip():
            break  # next section (Returns:, Raises:)
    return description, params


def function_schema(function: Callable[..., Any], skip: tuple[str, ...] = ("context",)) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) for a plain typed function."""
    description, docs = parse_docstring(function.__doc__)
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name not in hints:
            raise TypeError(f"{function.__qualname__}: parameter {name!r} needs a type hint")
        schema = type_schema(hints[name])
        if name in docs:
            schema["description"] = docs[name]
        if parameter.default is parameter.empty:
            required.append(name)
        else:
            schema["default"] = parameter.default
        properties[name] = schema
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return description, parameters


def _check(value: Any, schema: Mapping[str, Any], where: str) -> Any:
    if "enum" in schema:
        if value not in schema["enum"]:
            raise ToolError(f"{where} must be one of {schema['enum']}, got {value!r}")
        return value
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check(value, option, where)
            except ToolError:
                continue
        raise ToolError(f"{where} has the wrong type: {type(value).__name__}")
    kind = schema.get("type")
    if kind is None:
        return value
    if kind == "null" and value is None:  # Optional parameters of MCP servers: anyOf [T, null]
        return None
    if value is None:
        raise ToolError(f"{where} must not be null")
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "array" and isinstance(value, list):
        items = schema.get("items", {})
        return [_check(v, items, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "object" and isinstance(value, dict):
        extra = schema.get("additionalProperties", {})
        return {k: _check(v, extra if isinstance(extra, dict) else {}, f"{where}.{k}") for k, v in value.items()}
    raise ToolError(f"{where} must be {kind}, got {type(value).__name__}")


def validate_arguments(parameters: Mapping[str, Any], arguments: Any) -> dict[str, Any]:
    """Check ``arguments`` against an object schema; return the keyword arguments.

    Raises :class:`ToolError` with a message meant for the model.
    """
    if not isinstance(arguments, dict):
        raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    if len(repr(arguments)) > MAX_ARGUMENT_CHARS:
        raise ToolError(f"arguments are too large (over {MAX_ARGUMENT_CHARS:,} characters)")
    properties = parameters.get("properties", {})
    unknown = sorted(set(arguments) - set(properties))
    if unknown and parameters.get("additionalProperties") is False:
        raise ToolError(f"unknown argument(s) {unknown}; expected {sorted(properties)}")
    missing = [name for name in parameters.get("required", []) if name not in arguments]
    if missing:
        raise ToolError(f"missing required argument(s) {missing}")
    return {name: _check(value, properties.get(name, {}), name) for name, value in arguments.items()}
