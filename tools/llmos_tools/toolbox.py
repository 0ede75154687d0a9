"""``Toolbox``: a class whose ``@tool`` methods become tools that share one instance's state.

    class Notes(Toolbox):
        '''Notes kept in one file.'''

        prefix = "notes_"  # tool names: notes_add, notes_search

        def __init__(self, path: str) -> None:
            self.path = path

        @tool(effects={Effect.WRITES})
        def add(self, text: str) -> str:
            '''Add a note.'''
            ...

        @tool
        def search(self, query: str) -> str:
            '''Find notes that mention the query.'''
            ...

    @hookimpl
    def register_tools(register):
        register(Notes("~/notes.txt"))  # a Toolbox registers all of its tools

Contract: ``@tool`` on a method builds the schema once, at class creation, skipping
``self``; :meth:`Toolbox.tools` returns one :class:`Tool` per method, bound to this
instance and named ``prefix + method name`` (or the ``name=`` given to ``@tool``).
Subclasses inherit and may override tool methods. Not covered: per-instance
effects (declare them on each method) and closing resources (give the class a
``close`` method and call it yourself; llmos does not yet call it at exit).
"""

from __future__ import annotations

from typing import ClassVar

from llmos_tools.abi import Tool


class Toolbox:
    """Base class for a group of tools bound to one instance. See the module docstring."""

    prefix: ClassVar[str] = ""

    def tools(self) -> list[Tool]:
        """This instance's tools, bound, in definition order (base classes first)."""
        found: dict[str, Tool] = {}
        for klass in reversed(type(self).__mro__):
            for attribute, value in vars(klass).items():
                if isinstance(value, Tool):
                    found[attribute] = value  # a subclass's definition replaces its base's
        bound = []
        for unbound in found.values():
            tool = unbound.__get__(self, type(self))
            tool.name = self.prefix + tool.name
            bound.append(tool)
        return bound
