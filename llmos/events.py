"""The event stream: everything the kernel does, as values.

The kernel does no terminal or file I/O; it yields these events and every shell
(CLI, TUI, task runner, tests, the session store) consumes the same stream.
Each event is a small frozen dataclass with a ``kind`` and a JSON-ready
:meth:`Event.to_dict`. New kinds may be added; consumers ignore kinds they do not
know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **data}


@dataclass(frozen=True)
class Token(Event):
    """A generated piece of visible assistant text (markup is not shown)."""

    kind: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True)
class CallEvent(Event):
    """The model closed a tool call; the kernel is about to check and run it."""

    kind: ClassVar[str] = "call"
    id: str
    name: str
    arguments: dict[str, Any]
    raw: str


@dataclass(frozen=True)
class ResultEvent(Event):
    """A tool call's result, as the model will read it."""

    kind: ClassVar[str] = "result"
    id: str
    name: str
    text: str
    is_error: bool
    trust: str
    source: str
    seconds: float
    artifacts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ArtifactEvent(Event):
    kind: ClassVar[str] = "artifact"
    path: str
    mime: str
    description: str = ""


@dataclass(frozen=True)
class PageIn(Event):
    kind: ClassVar[str] = "page_in"
    page: str
    tokens: int


@dataclass(frozen=True)
class PageOut(Event):
    kind: ClassVar[str] = "page_out"
    page: str
    tokens: int
    shifted: bool
    stub: str


@dataclass(frozen=True)
class ApprovalRequest(Event):
    """The policy wants a person to approve this exact call (bound by ``digest``)."""

    kind: ClassVar[str] = "approval_request"
    id: str
    name: str
    arguments: dict[str, Any]
    reason: str
    digest: str


@dataclass(frozen=True)
class PolicyDecision(Event):
    kind: ClassVar[str] = "policy"
    id: str
    name: str
    decision: str  # allow | ask | deny
    reasons: list[str]
    approved: bool | None = None


@dataclass(frozen=True)
class Progress(Event):
    """A tool's progress report (e.g. a denoising step)."""

    kind: ClassVar[str] = "progress"
    name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Error(Event):
    """Something went wrong that the model could not be shown (or a budget ran out)."""

    kind: ClassVar[str] = "error"
    code: str  # budget_steps | budget_tokens | budget_time | context_full | backend | bug
    message: str


@dataclass(frozen=True)
class Done(Event):
    """The turn ended. ``reason``: answer | budget | error | cancelled."""

    kind: ClassVar[str] = "done"
    answer: str
    reason: str
    steps: int
    counters: dict[str, float]
