"""Plans: which calls a task may make, declared before untrusted text can steer the model.

CaMeL (Debenedetti et al., 2025) splits an agent in two: a planner that reads only the user's
words writes the control flow, and what tools return is data that never becomes control. llmos
runs one model in one context, so it makes the split in time instead: the model declares a
*plan* with the :data:`PLAN_TOOL` tool while its context holds only trusted text (the system
prompt, the user's words, trusted results). From then on the policy (rule ``off_plan`` of
:mod:`llmos.policy.rules`) holds every call with effects to it:

* a tool with effects (network, writes, sends out) the plan does not name → ``off_plan``;
* an argument the plan *pins* (the plan lists the values it may hold) holding another value
  → ``off_plan`` (pins say "only these pages / recipients / objects"; unpinned arguments are
  left to the provenance rules);
* a ``plan`` call made once untrusted text is in the context is refused: a plan written by a
  model that may be reading an injection is no plan.

Modes (``policy: {plan: ...}``): ``declared`` (default) binds a turn's calls once the model has
made a plan in it; ``required`` also refuses every call with effects made without one (the mode
for unattended runs: a model that skips planning gets nothing done, rather than anything);
``off`` ignores plans.

A plan binds the user turn it was made in; the next user turn starts without one. A plan call
carries ``{"tools": [names], "pins": {tool: {argument: [values]}}}``; pinned values compare
without case, spaces or dashes, and link arguments (``url``, ``link`` …) by host and path.

A later user turn of a conversation whose context already holds untrusted text is planned by
the kernel in a clean context (``plan: required``; :mod:`llmos.kernel`): only the system prompt
and the user's turns, the ``plan`` tool alone, one forced call; its result carries
``clean_plan`` in its meta (the kernel's own label: a tool cannot set it), and such a plan is in
force although untrusted text precedes it. In ``declared`` mode no such pass runs, and a model
that wants to plan after untrusted text cannot.

Not covered: a quarantined reader (CaMeL's second model, whose output is data the planner never
reads) is not built: the model that acts still reads every result; an injection that stays inside the
plan (a planned tool, an unpinned argument) is left to the provenance rules; read-only tools
are not held to the plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmos_tools import Tool, ToolError, ToolResult

from llmos.policy.provenance import LINK_ARGUMENTS, normalize

if TYPE_CHECKING:
    from llmos.dialects.base import Turn

PLAN_TOOL = "plan"
RECORDED = "plan recorded: "  # the plan tool's result starts with this, then the plan as JSON
PlanMode = Literal["off", "declared", "required"]
PLAN_MODES: tuple[PlanMode, ...] = ("off", "declared", "required")
PLAN_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tools": {"type": "array", "items": {"type": "string"}, "description": "every tool the task will call"},
        "pins": {
            "type": "object",
            "description": "optional: {tool: {argument: [values]}}, the only values those arguments may take",
        },
    },
    "required": ["tools"],
}


@dataclass(frozen=True)
class Plan:
    tools: frozenset[str]
    pins: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    def misfits(self, tool: str, arguments: Mapping[str, Any]) -> list[str]:
        """Why this call is outside the plan (empty: it fits)."""
        if tool not in self.tools:
            return [f"{tool} is not in the plan (planned: {', '.join(sorted(self.tools)) or 'nothing'})"]
        out = []
        for argument, allowed in self.pins.get(tool, {}).items():
            for value in _values(arguments.get(argument)):
                if _pinned(argument, value) not in allowed:
                    out.append(f"{tool}.{argument}={value!r} is not among the planned values")
        return out


def plan_tool() -> Tool:
    """The tool a model calls to declare its plan; the policy reads the plan from its result."""
    description = (
        "Call this first, before any other tool and before reading anything: name every tool the task "
        "will use and, where the user's words fix them, the only values an argument may take "
        "(pins: {tool: {argument: [values]}}). Calls outside the plan are refused."
    )
    return Tool(PLAN_TOOL, description, PLAN_PARAMETERS, _record)


def _record(tools: list[str], pins: dict[str, Any] | None = None) -> ToolResult:
    plan = {"tools": sorted({str(t) for t in tools}), "pins": _checked_pins(pins or {})}
    return ToolResult(text=RECORDED + json.dumps(plan, sort_keys=True, ensure_ascii=False), source=PLAN_TOOL)


def _checked_pins(pins: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for tool, arguments in pins.items():
        if not isinstance(arguments, Mapping):
            raise ToolError(f"pins.{tool} must map argument names to lists of values")
        out[str(tool)] = {str(a): [str(v) for v in _values(values)] for a, values in arguments.items()}
    return out


def plan_in_force(turns: Sequence[Turn]) -> Plan | None:
    """The plan made in the current user turn, if one was recorded while the context was clean."""
    start = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    tainted = any(t.role == "result" and not t.trusted for t in turns[:start])
    plan = None
    for turn in turns[start + 1 :]:
        if turn.role != "result":
            continue
        if not turn.trusted:
            return plan  # what comes after untrusted text is not a plan
        text = turn.meta.get("paged_out", {}).get("text", turn.text)  # a paged-out plan is still the plan
        clean = not tainted or turn.meta.get("clean_plan")  # the kernel planned it from the user's words
        if turn.meta.get("tool") == PLAN_TOOL and text.startswith(RECORDED) and clean:
            plan = _parse(text[len(RECORDED) :])
    return plan


def _parse(text: str) -> Plan:
    data = json.loads(text)
    pins = {
        tool: {argument: frozenset(_pinned(argument, v) for v in values) for argument, values in arguments.items()}
        for tool, arguments in data.get("pins", {}).items()
    }
    return Plan(frozenset(data["tools"]), pins)


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _pinned(argument: str, value: str) -> str:
    """The form a pinned value is compared in: links without scheme or ``www.``, others normalized."""
    if argument in LINK_ARGUMENTS:
        value = value.strip().split("://", 1)[-1].removeprefix("www.").rstrip("/")
    return normalize(value)
