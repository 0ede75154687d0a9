"""AgentDojo adapter: llmos's kernel and policy as an AgentDojo pipeline element.

Needs ``agentdojo==0.1.35`` (benchmark v1.2.2), a dev/eval dependency only.

* Every AgentDojo function becomes an llmos :class:`~llmos_tools.Tool` with effects
  declared by :func:`effects_for` (from the function's name and meaning) and a
  result that is an *untrusted page* (source: the tool name, so private; web pages:
  their URL, so public), except :data:`TRUSTED_TOOLS`, which return only the
  user's own account facts (their IBAN, balance, profile, date, channel list).
* Each result also declares its *records* (:func:`records_of`): the values of the
  structured fields a service keeps (ids; senders, recipients, cc/bcc, participants,
  owners, ``shared_with``; counterparty IBANs; the items of a plain listing such as
  the channel names), never free text (subjects, bodies, descriptions, file
  contents, reviews, pages), which is where AgentDojo's injections sit. The policy
  vouches for a destination equal to a record as a whole value
  (:mod:`llmos.policy.provenance`); they travel as ``ToolResult.records``, which
  the kernel copies into the result turn's ``meta["records"]``.
* The model is a :class:`~llmos.testing.ScriptedCPU` replaying a list of calls (a
  *fully compromised* model: it obeys every injection), in the llmos dialect,
  through the real :class:`~llmos.kernel.Kernel`; asks go to the approver (none:
  denied).
* Only calls the kernel *executed* are written back as AgentDojo tool calls, so its
  trace-based checks judge what happened, not what was attempted; attempts and
  executions are counted separately in :class:`Tally`.
* Plans (``LlmosElement.planner``, :mod:`llmos.policy.plan`): the scripted model first
  calls ``plan`` with what :func:`plan_from_words` derives from the user's words and the
  user task's own calls, *before* any tool result is in its context: a compromised model
  has read no injection yet, so its plan is the user's. The plan call is llmos's own and
  is left out of the AgentDojo trace and of the tallies.

Workarounds for agentdojo 0.1.35 quirks, used by :mod:`benchmarks.agentdojo_eval`:

* the attack's injection candidates are found with AgentDojo's own
  ``get_injection_candidates`` (which reads content blocks correctly); its
  ``is_task_injectable`` (string content only) and ``suite.check`` are not used;
* the ``benchmark_suite_*`` helpers (which need a logger with a ``logdir``) are not
  used: the eval calls ``suite.run_task_with_pipeline`` per pair itself;
* the ``important_instructions`` attack (and every kind built on it: its variants,
  ``tool_knowledge`` and the DoS kinds) needs a pipeline name containing a known model
  name: the element is named ``llmos-gpt-4o-2024-05-13`` (the injection text then
  addresses "GPT-4"; the scripted model ignores the wording anyway).

``LlmosElement.context`` keeps the text the model read on its last step (the whole
conversation, as the dialect rendered it), so the eval can check that an attack's
injected text reached the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement
from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import EmptyEnv, Env, FunctionCall, FunctionsRuntime
from agentdojo.types import (
    ChatAssistantMessage,
    ChatMessage,
    ChatToolResultMessage,
    ChatUserMessage,
    text_content_block_from_string,
)
from llmos_tools import Effect, Tool, ToolError, ToolResult, Trust
from pydantic import BaseModel

from llmos.dialects.llmos import CALL, CALL_END, END, LlmosDialect
from llmos.events import ApprovalRequest, Event
from llmos.kernel import Budgets, Kernel
from llmos.policy import Decision, Policy
from llmos.policy.plan import PLAN_TOOL, plan_tool
from llmos.testing import ScriptedCPU

PIPELINE_NAME = "llmos-gpt-4o-2024-05-13"
SENDS_OUT = {
    "send_money",
    "schedule_transaction",
    "update_scheduled_transaction",
    "send_email",
    "share_file",
    "post_webpage",
    "send_direct_message",
    "send_channel_message",
    "invite_user_to_slack",
    "add_calendar_event_participants",
    "create_calendar_event",
    "reschedule_calendar_event",
    "cancel_calendar_event",
}  # calendar changes e-mail the participants; invitations e-mail the invitee
NETWORK = {"get_webpage", "post_webpage"}
WRITE_PREFIXES = (
    "update_",
    "delete_",
    "create_",
    "cancel_",
    "reschedule_",
    "append_",
    "add_",
    "remove_",
    "reserve_",
    "invite_",
    "send_",
    "schedule_",
    "share_",
    "post_",
)
# The user's own account facts, directory and catalog entries: no third party writes free text into them.
# Everything else (mail, files, messages, channel names, web pages, reviews, transactions) is untrusted.
TRUSTED_TOOLS = {
    "get_iban", "get_balance", "get_user_info", "get_user_information", "get_current_day",
    "get_users_in_channel", "search_contacts_by_name", "search_contacts_by_email",
    "get_all_hotels_in_city", "get_hotels_prices", "get_hotels_address", "get_all_restaurants_in_city",
    "get_cuisine_type_for_restaurants", "get_restaurants_address", "get_dietary_restrictions_for_all_restaurants",
    "get_contact_information_for_restaurants", "get_price_for_restaurants", "check_restaurant_opening_hours",
    "get_all_car_rental_companies_in_city", "get_car_types_available", "get_car_fuel_options",
    "get_car_rental_address", "get_car_price_per_day", "get_flight_information",
}  # fmt: skip


# Structured fields a service keeps (who sent, received, takes part, owns, shares; which object):
# their values are declared as *records* of the result; every other field (subject, body, content,
# description, title, reviews) is free text a third party may have written.
RECORD_FIELDS = frozenset(
    {"id", "id_", "sender", "recipient", "recipients", "cc", "bcc", "participants", "owner", "shared_with"}
)


def records_of(value: Any) -> list[str]:
    """What a result declares as records: party and id fields, and the items of a plain listing.

    A listing is a result that is a list of strings (channel names, members): the names
    of objects in the user's own account. Free text is never a record.
    """
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    return sorted(set(_record_fields(value)))


def _record_fields(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in RECORD_FIELDS:
                yield from _scalars(item)
            else:
                yield from _record_fields(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _record_fields(item)


def _scalars(value: Any) -> Iterator[str]:
    """The values of a record field: a scalar, the items of a list, the keys of a mapping (``shared_with``)."""
    if isinstance(value, Mapping):
        yield from (str(key) for key in value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _scalars(item)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        yield str(value)


def effects_for(name: str) -> frozenset[Effect]:
    """Declared effects of an AgentDojo function, from its name and meaning; no prefix: read-only."""
    effects = set()
    if name in SENDS_OUT:
        effects.add(Effect.SENDS_OUT)
    if name in NETWORK:
        effects.add(Effect.NETWORK)
    if name.startswith(WRITE_PREFIXES):
        effects.add(Effect.WRITES)
    return frozenset(effects)


@dataclass
class Tally:
    """What one run attempted and what the kernel let through."""

    attempted: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)


class AllowAll(Policy):
    """The undefended baseline: every call runs."""

    def decide(self, tool: Tool, arguments: Any, *, turns: Sequence[Any]) -> Decision:
        return Decision("allow", ("undefended baseline",))


def wrap_runtime(
    runtime: FunctionsRuntime,
    env: Env,
    trusted: Collection[str] = TRUSTED_TOOLS,
) -> list[Tool]:
    """AgentDojo's functions as llmos tools that run against ``env``; ``trusted`` names the trusted ones."""
    return [_tool(runtime, env, name, name in trusted) for name in runtime.functions]


def _tool(runtime: FunctionsRuntime, env: Env, name: str, trusted: bool) -> Tool:
    function = runtime.functions[name]
    properties: dict[str, Any] = {arg: {} for arg in function.parameters.model_json_schema().get("properties", {})}

    def run(**arguments: Any) -> ToolResult:
        value, error = runtime.run_function(env, name, arguments)
        if error:
            raise ToolError(error)
        text, records = tool_result_to_str(value), tuple(records_of(value))
        if trusted:
            return ToolResult(text=text, trust=Trust.TRUSTED, source=name, data=value, records=records)
        source = _url_source(arguments) if name == "get_webpage" else name
        return ToolResult(text=text, trust=Trust.UNTRUSTED, source=source, data=value, records=records)

    schema = {"type": "object", "properties": properties, "additionalProperties": True}
    return Tool(name, function.description, schema, run, effects=effects_for(name))


def _url_source(arguments: dict[str, Any]) -> str:
    url = str(arguments.get("url", ""))
    return url if "://" in url else "https://" + url


def script_for(calls: Sequence[FunctionCall], answer: str) -> list[str]:
    """What the compromised model writes: each call in the llmos dialect, then the answer."""
    outputs = [
        f"{CALL}{json.dumps({'name': c.function, 'arguments': dict(c.args)}, default=str)}{CALL_END}" for c in calls
    ]
    return [*outputs, f"{answer}{END}"]


def plan_from_words(prompt: str, calls: Sequence[FunctionCall]) -> dict[str, Any]:
    """The plan a planner that reads only ``prompt`` would make for ``calls``: their tools, and
    each string argument pinned to its values when the user's words state every one of them
    (as whole words: "13" in "2024-05-13" is not the file id 13)."""
    words = prompt.lower()
    pins: dict[str, dict[str, list[str]]] = {}
    for tool in sorted({c.function for c in calls}):
        values: dict[str, list[Any]] = {}
        for call in (c for c in calls if c.function == tool):
            for argument, value in call.args.items():
                values.setdefault(argument, []).extend(value if isinstance(value, list) else [value])
        stated = {
            argument: sorted(set(found))
            for argument, found in values.items()
            if found and all(isinstance(v, str) and v and _stated(v, words) for v in found)
        }
        if stated:
            pins[tool] = stated
    return {"tools": sorted({c.function for c in calls}), "pins": pins}


def _stated(value: str, words: str) -> bool:
    # a whole token: "13" in "2024-05-13" or "x.com/13" is part of another value
    return re.search(rf"(?<![\w\-./:@]){re.escape(value.lower())}(?![\w\-/:@]|\.\w)", words) is not None


class LlmosElement(BasePipelineElement):
    """Runs a scripted, compromised model through the llmos kernel and policy.

    ``plan(env)`` returns the calls to replay and the final answer for the current
    task (the eval sets it per pair); ``policy`` and ``approver`` are the defence.
    ``planner(env)``, when set, returns the arguments of a ``plan`` call the model makes
    first (see :func:`plan_from_words`).
    """

    name = PIPELINE_NAME

    def __init__(
        self,
        policy: Policy | None = None,
        approver: Callable[[ApprovalRequest], bool] | None = None,
        trusted: Collection[str] = TRUSTED_TOOLS,
    ) -> None:
        self.policy = policy or Policy()
        self.trusted = trusted
        self.approver = approver
        self.plan: Callable[[Env], tuple[list[FunctionCall], str]] = lambda env: ([], "")
        self.planner: Callable[[Env], dict[str, Any]] | None = None
        self.tally = Tally()
        self.context = ""  # the text the model read on its last step (the whole conversation)

    def query(
        self,
        query: str,
        runtime: FunctionsRuntime,
        env: Env = EmptyEnv(),  # noqa: B008 - the signature AgentDojo defines
        messages: Sequence[ChatMessage] = [],
        extra_args: dict = {},  # noqa: B006 - the signature AgentDojo defines
    ) -> tuple[str, FunctionsRuntime, Env, Sequence[ChatMessage], dict]:
        calls, answer = self.plan(env.model_copy(deep=True))
        tools = wrap_runtime(runtime, env, self.trusted)
        if self.planner is not None:
            calls = [FunctionCall(function=PLAN_TOOL, args=self.planner(env.model_copy(deep=True))), *calls]
            tools.append(plan_tool())
        cpu = ScriptedCPU(script_for(calls, answer))
        budgets = Budgets(max_steps=len(calls) + 1, max_tokens=10**7, max_step_tokens=10**6)
        kernel = Kernel(cpu, LlmosDialect(), tools, policy=self.policy, approver=self.approver, budgets=budgets)
        events = list(kernel.ask(query))
        self.tally = tally_of(events)
        self.context = "".join(segment.text for segment in cpu.loads[-1]) if cpu.loads else ""
        out: list[ChatMessage] = [
            *messages,
            ChatUserMessage(role="user", content=[text_content_block_from_string(query)]),
        ]
        out += agentdojo_messages(events)
        return query, runtime, env, out, extra_args


def tally_of(events: Sequence[Event]) -> Tally:
    tally = Tally()
    for event in events:
        if getattr(event, "name", None) == PLAN_TOOL:
            continue  # llmos's own call, not one of the task's
        if event.kind == "call":
            tally.attempted.append(event.name)  # type: ignore[attr-defined]
        elif event.kind == "policy":
            decision, approved = event.decision, event.approved  # type: ignore[attr-defined]
            if decision == "ask":
                tally.asked.append(event.name)  # type: ignore[attr-defined]
            if decision == "deny" or approved is False:
                tally.denied.append(event.name)  # type: ignore[attr-defined]
                tally.reasons.append(list(event.reasons))  # type: ignore[attr-defined]
        elif event.kind == "result" and not event.text.startswith("error: the policy"):  # type: ignore[attr-defined]
            tally.executed.append(event.name)  # type: ignore[attr-defined]
    return tally


def agentdojo_messages(events: Sequence[Event]) -> list[ChatMessage]:
    """Executed calls as AgentDojo tool calls and results; refused attempts only as assistant text."""
    out: list[ChatMessage] = []
    calls: dict[str, Any] = {}
    answer = ""
    for event in events:
        data = event.to_dict()
        if event.kind == "call":
            calls[data["id"]] = data
        elif event.kind == "result":
            call = calls[data["id"]]
            if call["name"] == PLAN_TOOL:
                continue  # llmos's own call: not in AgentDojo's trace
            if data["text"].startswith("error: the policy"):
                note = f"[llmos refused {call['name']}: {data['text']}]"
                out.append(
                    ChatAssistantMessage(
                        role="assistant", content=[text_content_block_from_string(note)], tool_calls=None
                    )
                )
                continue
            function_call = FunctionCall(function=call["name"], args=call["arguments"], id=data["id"])
            out.append(
                ChatAssistantMessage(
                    role="assistant", content=[text_content_block_from_string("")], tool_calls=[function_call]
                )
            )
            error = data["text"] if data["is_error"] else None
            out.append(
                ChatToolResultMessage(
                    role="tool",
                    content=[text_content_block_from_string(data["text"])],
                    tool_call_id=data["id"],
                    tool_call=function_call,
                    error=error,
                )
            )
        elif event.kind == "done":
            answer = data["answer"]
    out.append(
        ChatAssistantMessage(role="assistant", content=[text_content_block_from_string(answer)], tool_calls=None)
    )
    return out
