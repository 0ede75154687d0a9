"""The tool ABI: what an app hands the kernel, and what it gets back.

Contract
--------
* A :class:`Tool` has a ``name``, a ``description``, a JSON-schema ``parameters``
  object, declared ``effects`` and a callable. The kernel validates arguments
  against the schema before calling (:func:`validate_arguments`), so the callable
  receives well-typed keyword arguments.
* A tool returns a :class:`ToolResult` (or a plain ``str``, wrapped for it).
* A tool raises :class:`ToolError` for mistakes the *model* made (bad input, a page
  that does not exist): the kernel turns it into a result the model reads. Any
  other exception is a bug in the tool; the kernel still reports it to the model
  but also records it as an error event.
* Effects are declared, never inferred: the policy trusts the declaration, so a
  plugin that under-declares is a plugin bug, not something the ABI can catch.

Not covered here: discovery (see :mod:`llmos_tools.plugins`), the policy itself
(it lives in the kernel), and streaming results (a result is one value).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Effect(enum.StrEnum):
    """What a tool can do beyond reading its arguments. No effects means read-only."""

    NETWORK = "network"  # talks to hosts other than this machine
    WRITES = "writes"  # changes files or state outside its own scratch space
    SENDS_OUT = "sends_out"  # can carry data to a third party (mail, post, upload)


READ_ONLY: frozenset[Effect] = frozenset()


class Trust(enum.StrEnum):
    """How far the kernel may believe a piece of text."""

    TRUSTED = "trusted"  # the user, the system prompt, the kernel's own text
    UNTRUSTED = "untrusted"  # web pages, files, tool output derived from them


@dataclass(frozen=True)
class Artifact:
    """A file a tool produced (a plot, a table, an image)."""

    path: Path
    mime: str
    description: str = ""


@dataclass(frozen=True)
class StoredPage:
    """A page of a stored document that a result brings back into RAM (a page-in)."""

    document: int
    page: int
    title: str = ""
    n_tokens: int = 0


@dataclass
class ToolResult:
    """What a tool call gives back.

    ``text`` is what the model reads. ``trust`` and ``source`` are the provenance of
    that text: a web page is untrusted with its URL as source; a calculator result is
    trusted. ``is_error`` marks results that report a failure. ``records`` are the
    values of structured fields the service itself keeps (ids, senders, participants),
    never free text: the policy vouches for a destination equal to one of them.
    ``whole_text`` hands the kernel the whole document (programs read it through
    ``ToolContext.documents``; paged memory stores it); ``page_ins`` name the stored pages
    a memory tool brings back, so the kernel reports page-ins and can put saved KV back.
    """

    text: str
    trust: Trust = Trust.TRUSTED
    source: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    is_error: bool = False
    data: Any = None  # structured value for programs (reports, tests); never shown to the model
    records: tuple[str, ...] = ()
    # what the kernel reads besides the text (typed, so no tool's ``data`` layout is part of the ABI):
    whole_text: str | None = None  # the whole document this result shows a part of (a fresh open)
    page_ins: tuple[StoredPage, ...] = ()  # stored pages this result brings back (recall, open_page)


@dataclass
class ToolContext:
    """What the kernel lends a tool for one call."""

    session_id: str = ""
    workdir: Path = field(default_factory=Path.cwd)  # where artifacts go
    emit: Callable[[str, Mapping[str, Any]], None] = lambda kind, data: None  # progress events
    settings: Mapping[str, Any] = field(default_factory=dict)
    # what the model has read this session (source -> whole text, oldest first): the
    # python app hands it to code as read_page/page_tables; untrusted, like the context
    documents: Mapping[str, str] = field(default_factory=dict)
    # the session's page store (an ``llmos_memory.Store``), lent by the kernel to the tools that
    # read paged-out memory; ``None`` outside a session with paged memory
    memory: Any = None


ToolFunction = Callable[..., "ToolResult | str"]


@dataclass
class Tool:
    """One callable app entry point, as the kernel and the model see it."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: ToolFunction
    effects: frozenset[Effect] = READ_ONLY
    wants_context: bool = False  # the function takes a ``context: ToolContext`` keyword
    plugin: str = ""  # which plugin registered it (filled in by the registry)
    method: bool = False  # an unbound ``@tool`` method: bound to an instance on attribute access

    def __get__(self, instance: object, owner: type | None = None) -> Tool:
        """``@tool`` on a method: ``box.search`` is a Tool bound to ``box`` (see :class:`Toolbox`)."""
        if instance is None or not self.method:
            return self
        return dataclasses.replace(self, function=self.function.__get__(instance, owner), method=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as if ``@tool`` were not there (no validation)."""
        return self.function(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function description shown to models."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def run(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> ToolResult:
        """Validate ``arguments`` and call the tool. Raises :class:`ToolError` on bad input."""
        from llmos_tools.schema import validate_arguments

        if self.method:
            raise TypeError(f"tool {self.name!r} is a method: use it through an instance of its Toolbox")
        kwargs = validate_arguments(self.parameters, arguments)
        if self.wants_context:
            kwargs["context"] = context or ToolContext()
        value = self.function(**kwargs)
        if isinstance(value, ToolResult):
            return value
        if isinstance(value, str):
            return ToolResult(text=value)
        raise TypeError(f"tool {self.name!r} returned {type(value).__name__}, not str or ToolResult")
