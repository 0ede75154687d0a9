"""``@tool``: a plain typed function with a docstring becomes a :class:`Tool`.

    @tool
    def add(a: int, b: int) -> str:
        '''Add two numbers.

        Args:
            a: the first number
            b: the second number
        '''
        return str(a + b)

    @tool(effects={Effect.NETWORK}, name="fetch")
    def fetch_page(url: str, context: ToolContext) -> ToolResult: ...

On a method (first parameter ``self``) in a :class:`~llmos_tools.toolbox.Toolbox`
subclass, ``@tool`` makes an unbound tool; each instance of the class binds it.

A parameter named ``context`` receives the :class:`ToolContext` and is not shown to
the model. The schema is built once, when the decorator runs, so a bad annotation
fails at import time, where a plugin author sees it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, overload

from llmos_tools.abi import READ_ONLY, Effect, Tool, ToolFunction
from llmos_tools.schema import function_schema


def make_tool(
    function: ToolFunction,
    *,
    name: str | None = None,
    description: str | None = None,
    effects: Iterable[Effect | str] = READ_ONLY,
) -> Tool:
    """Build a :class:`Tool` from a typed function (what ``@tool`` does)."""
    names = list(inspect.signature(function).parameters)
    method = bool(names) and names[0] == "self"  # a method in a class body, bound later by its Toolbox
    doc_description, parameters = function_schema(function, skip=("context", "self") if method else ("context",))
    wants_context = "context" in names
    return Tool(
        name=name or function.__name__,
        description=description or doc_description,
        parameters=parameters,
        function=function,
        effects=frozenset(Effect(e) for e in effects),
        wants_context=wants_context,
        method=method,
    )


@overload
def tool(function: ToolFunction, /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, effects: Iterable[Effect | str] = READ_ONLY
) -> Callable[[ToolFunction], Tool]: ...
def tool(function: Any = None, /, **options: Any) -> Any:
    """Decorator form of :func:`make_tool`, usable bare or with options."""
    if function is not None:
        return make_tool(function, **options)
    return lambda f: make_tool(f, **options)
