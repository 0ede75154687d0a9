"""The policy kernel: allow, ask or deny each tool call, from effects and provenance.

The model is assumed compromised (jailbreak, prompt injection, poisoned weights), so
every decision rests on facts the model cannot forge: the tool's *declared* effects
(:class:`~llmos_tools.Effect`) and the provenance of the call's arguments and of the
context (:mod:`llmos.policy.provenance`), both computed from the kernel's own turns.

Rules, strictest wins (each decision lists every rule that fired, plus the
provenance it used, as its reasons; they reach the ``audit`` table):

1. ``tools: {name: deny}`` denies; ``ask`` asks at least; ``allow`` skips rule 4's ask.
1b. **off plan** (:mod:`llmos.policy.plan`): a call with effects outside the plan the model
   declared before untrusted text entered the context, or (``plan: required``) with no plan
   → ``off_plan`` (default **deny**; per-tool ``allow`` does not lift it); a ``plan`` call once
   untrusted text is in the context is denied.
2. **exfiltration** (tools with ``NETWORK`` or ``SENDS_OUT``): an argument that
   addresses a host the user never named *and* the call carries private data
   verbatim (a token or a line from a file, mail, memory, sandbox output) →
   ``exfiltration`` (default **deny**; per-tool ``allow`` does not lift it).
2b. **user data** (tools with ``NETWORK`` or ``SENDS_OUT``), once untrusted text is in
   the context: the call carries a value the user typed (:mod:`llmos.policy.user_data`:
   verbatim, percent-encoded, base64, hex, reversed, ROT13, with separators between its
   characters or in leetspeak) to a destination the user did not
   name: a host, a recipient (``to``, ``iban``, ``channel`` …) whose whole value is not
   in the user's words (a *record* does not count: an attacker who mailed the user is
   recorded as a sender), or no destination the arguments show (a search query, code)
   → ``user_data`` (default **deny**; per-tool ``allow`` does not lift it).
3. **private network**: such a call to an un-named host while untrusted text and
   private data (a private result, or a value the user typed) are both in the context
   (the data could be encoded, so not found verbatim) → ``private_network`` (default **ask**).
4. **untrusted argument** (tools with ``WRITES`` or ``SENDS_OUT``): a *target* (where
   data, money or access goes: recipient, IBAN, URL, invitee, hotel; which object is
   changed: ``id``, ``*_id``; or a credential) holds an identifier found in an untrusted
   page and vouched for nowhere (not in the user's words, a trusted result, a record a
   tool declared, or a delegated lookup; see :mod:`llmos.policy.provenance`); or a
   target the model wrote itself (found nowhere in the context); or any argument holds
   a link to a host the user never named, copied from untrusted text or written by the
   model (phishing) → ``untrusted_argument`` (default **ask**). With ``taint: context``
   any such call after an untrusted page is asked about (the conservative mode: values
   the model transformed cannot slip through).
5. Otherwise: read-only tools and calls with clean provenance are allowed.

Config shape (a mapping; the task runner passes a task file's ``policy:`` through
:meth:`Policy.from_config`)::

    policy:
      taint: derived            # derived (default) | context
      plan: declared            # declared (default) | required | off
      hosts: [example.com]      # hosts that count as user-named, besides those in the user's turns
      tools: {python: ask, send_email: allow}
      actions: {off_plan: deny, exfiltration: deny, user_data: deny, private_network: ask,
                untrusted_argument: ask}

Not covered: values the model transforms before use (see provenance and user_data), side channels
through read-only tools (a search query is ``NETWORK`` and is checked; a tool that
under-declares its effects is not), and the number of calls (the kernel's step
budget bounds it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote

from llmos_errors import LlmosError
from llmos_tools import Effect, Tool

from llmos.policy.plan import PLAN_MODES, PLAN_TOOL, PlanMode, plan_in_force
from llmos.policy.provenance import (
    LINK_ARGUMENTS,
    URL_RE,
    ArgumentOrigin,
    Context,
    context_from,
    host_of,
    normalize,
    origins,
    vouched,
)
from llmos.policy.user_data import UserValue, carried, user_values

if TYPE_CHECKING:
    from llmos.dialects.base import Turn

Action = Literal["allow", "ask", "deny"]
ACTIONS: tuple[Action, ...] = ("allow", "ask", "deny")
RULES = ("off_plan", "exfiltration", "user_data", "private_network", "untrusted_argument")
DEFAULT_ACTIONS: dict[str, Action] = {
    "off_plan": "deny",
    "exfiltration": "deny",
    "user_data": "deny",
    "private_network": "ask",
    "untrusted_argument": "ask",
}
CONFIG_KEYS = {"taint", "hosts", "tools", "actions", "plan"}
# Arguments that say where data or money goes: they must come from the user or a trusted result.
DESTINATIONS = frozenset(
    {"to", "recipient", "recipients", "cc", "bcc", "email", "emails", "user_email", "address", "url", "uri", "link"}
    | {"host", "iban", "account", "phone", "number", "participants", "channel", "user", "users"}
    | {"hotel", "restaurant", "company"}  # a booking commits money to whoever is named
)
CREDENTIALS = frozenset({"password", "passphrase", "token", "secret", "api_key", "key", "pin"})
# Arguments that say which existing object a call changes or deletes (also any ``*_id``).
REFERENCES = frozenset({"id", "ids"})
# Arguments that say who receives what a SENDS_OUT call carries (hosts are read from every argument).
RECIPIENTS = DESTINATIONS - LINK_ARGUMENTS - {"host", "address", "hotel", "restaurant", "company"}


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...] = ()


class PolicyConfigError(LlmosError, ValueError):
    """The policy configuration is not valid; the message says which key and why."""


def strictest(actions: Iterable[Action]) -> Action:
    return max(actions, key=ACTIONS.index, default="allow")


@dataclass
class Policy:
    """Decides each call; configure per task (``from_config``) and per tool (``overrides``)."""

    overrides: dict[str, Action] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)
    taint: Literal["derived", "context"] = "derived"
    actions: dict[str, Action] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    plan: PlanMode = "declared"

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Policy:
        """Build from the documented config shape; unknown keys and values are errors."""
        config = dict(config or {})
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise PolicyConfigError(f"policy: unknown key(s) {sorted(unknown)}; known: {sorted(CONFIG_KEYS)}")
        taint = config.get("taint", "derived")
        if taint not in ("derived", "context"):
            raise PolicyConfigError(f"policy.taint must be 'derived' or 'context', not {taint!r}")
        actions = dict(DEFAULT_ACTIONS)
        for rule, action in dict(config.get("actions") or {}).items():
            if rule not in RULES:
                raise PolicyConfigError(f"policy.actions: unknown rule {rule!r}; rules: {', '.join(RULES)}")
            actions[rule] = _action(action, f"policy.actions.{rule}")
        tools = {name: _action(a, f"policy.tools.{name}") for name, a in dict(config.get("tools") or {}).items()}
        hosts = {str(h).lower().removeprefix("www.") for h in config.get("hosts") or ()}
        plan = config.get("plan", "declared")
        if plan not in PLAN_MODES:
            raise PolicyConfigError(f"policy.plan must be one of {', '.join(PLAN_MODES)}, not {plan!r}")
        return cls(overrides=tools, hosts=hosts, taint=taint, actions=actions, plan=plan)

    def decide(self, tool: Tool, arguments: Mapping[str, Any], *, turns: Sequence[Turn]) -> Decision:
        """Decide one call, given the conversation that produced it."""
        override = self.overrides.get(tool.name)
        if override == "deny":
            return Decision("deny", (f"configured: {tool.name} -> deny",))
        context = context_from(turns, self.hosts)
        found = origins(arguments, context)
        values = user_values(context)
        findings = self._off_plan(tool, arguments, context, turns) + self._findings(tool, context, found, values)
        if override == "allow":
            findings = [(a, r) for a, r in findings if a == "deny"]  # a leak stays denied
        elif override == "ask":
            findings.append(("ask", f"configured: {tool.name} -> ask"))
        action = strictest(a for a, _ in findings)
        reasons = [r for _, r in findings] or [_allowed_because(tool, override)]
        shown = ", ".join(v.masked() for v in values) or "none"
        reasons += [f"{context.describe()}; user values [{shown}]", *(f"arg {o.describe()}" for o in found)]
        return Decision(action, tuple(reasons))

    def _findings(
        self, tool: Tool, context: Context, found: list[ArgumentOrigin], values: list[UserValue]
    ) -> list[tuple[Action, str]]:
        findings: list[tuple[Action, str]] = []
        if tool.effects & {Effect.NETWORK, Effect.SENDS_OUT}:
            findings += self._user_data(tool, context, found, values)
            findings += self._network(tool, context, found, bool(values))
        if tool.effects & {Effect.WRITES, Effect.SENDS_OUT}:
            findings += self._consequential(tool, context, found)
        return findings

    def _off_plan(
        self, tool: Tool, arguments: Mapping[str, Any], context: Context, turns: Sequence[Turn]
    ) -> list[tuple[Action, str]]:
        """A call with effects outside the plan made before untrusted text (:mod:`llmos.policy.plan`)."""
        if self.plan == "off":
            return []
        if tool.name == PLAN_TOOL:
            if not context.untrusted:
                return []
            pages = ", ".join(f"{s.name}@{s.turn}" for s in context.untrusted)
            return [("deny", f"late plan: untrusted pages ({pages}) are already in the context")]
        if not tool.effects:
            return []
        plan = plan_in_force(turns)
        if plan is None:
            if self.plan == "required":
                return [(self.actions["off_plan"], f"off plan: {tool.name} has effects and no plan was made")]
            return []
        return [(self.actions["off_plan"], f"off plan: {why}") for why in plan.misfits(tool.name, arguments)]

    def _user_data(
        self, tool: Tool, context: Context, found: list[ArgumentOrigin], values: list[UserValue]
    ) -> list[tuple[Action, str]]:
        """A value the user typed, on its way to a destination the user did not name, after untrusted text."""
        if not context.untrusted or not values:
            return []
        seen: dict[str, str] = {}
        for origin in found:
            for value, how in carried(origin.value, values):
                seen.setdefault(value.key, f"{value.masked()} in {origin.path} ({how})")
        unnamed = _unnamed_destinations(tool, context, found) if seen else []
        if not unnamed:
            return []
        pages = ", ".join(f"{s.name}@{s.turn}" for s in context.untrusted)
        why = (
            f"user data: {tool.name} would carry the user's own value(s) {'; '.join(seen.values())} to "
            f"{'; '.join(unnamed)}, which the user never named, after untrusted pages ({pages}) entered the "
            "context; the user's values go only where the user's words send them"
        )
        return [(self.actions["user_data"], why)]

    def _network(
        self, tool: Tool, context: Context, found: list[ArgumentOrigin], user_values_in_context: bool = False
    ) -> list[tuple[Action, str]]:
        foreign = sorted({h for o in found for h in o.hosts if not context.host_is_user_named(h)})
        if not foreign:
            return []
        leaks = sorted({p for o in found for p in o.private_sources()})
        if leaks:
            why = (
                f"exfiltration: {tool.name} would carry private data ({', '.join(leaks)}) to host(s) "
                f"the user never named: {', '.join(foreign)}"
            )
            return [(self.actions["exfiltration"], why)]
        composed = sorted({h for o in found if not o.is_followed_link for h in o.hosts if h in foreign})
        if composed and context.untrusted and (context.private or user_values_in_context):
            private = "private data" if context.private else "values the user typed"
            why = (
                f"private network: {tool.name} addresses host(s) the user never named ({', '.join(composed)}) "
                f"in a link it composed, while untrusted text and {private} are both in the context"
            )
            return [(self.actions["private_network"], why)]
        return []

    def _consequential(self, tool: Tool, context: Context, found: list[ArgumentOrigin]) -> list[tuple[Action, str]]:
        kind = "sends data out" if Effect.SENDS_OUT in tool.effects else "writes"
        pages = ", ".join(f"{s.name}@{s.turn}" for s in context.untrusted) or "none"
        if self.taint == "context" and context.untrusted:
            why = f"tainted: {tool.name} {kind} and every argument was written after untrusted pages ({pages})"
            return [(self.actions["untrusted_argument"], why)]
        suspect = [(o.path, i, "from an untrusted page") for o in found if _is_target(o) for i in o.injected()]
        suspect += [(o.path, i, how) for o in found for i, how in _unnamed_links(o, context)]
        # where data, money or access goes, what is changed, and credentials must be vouched for:
        # the model may not invent them
        suspect += [(o.path, i, "written by the model") for o in found if _is_target(o) for i in o.unvouched()]
        if not suspect:
            return []
        shown = "; ".join(dict.fromkeys(f"{path} holds {ident!r} ({how})" for path, ident, how in suspect[:6]))
        why = (
            f"untrusted argument: {tool.name} {kind}, untrusted pages in the context: {pages}; "
            f"{shown}; vouched for by neither the user, a trusted result nor a record"
        )
        return [(self.actions["untrusted_argument"], why)]


def _is_target(origin: ArgumentOrigin) -> bool:
    """Where data, money or access goes (recipient, IBAN, URL, invitee), what is changed (an object id),
    or a credential."""
    name = origin.name
    return name in DESTINATIONS or name in CREDENTIALS or name in REFERENCES or name.endswith(("_id", "_ids"))


def _unnamed_destinations(tool: Tool, context: Context, found: list[ArgumentOrigin]) -> list[str]:
    """Where the call sends what it carries, unless the user named it: hosts, recipients, or nowhere visible.

    A recipient counts as named only when its whole value is in the user's words (or a
    delegated lookup the user asked for): a *record* vouches that an address exists in
    the user's account, not that the user wants their data to go there.
    """
    unnamed = [f"host {h}" for h in sorted({h for o in found for h in o.hosts if not context.host_is_user_named(h)})]
    recipients = [o for o in found if o.name in RECIPIENTS] if Effect.SENDS_OUT in tool.effects else []
    unnamed += [f"{o.path} {o.value!r}" for o in recipients if not o.named_by_user()]
    if not recipients and not any(o.hosts for o in found):
        unnamed.append(f"wherever {tool.name} sends it (its arguments name no host or recipient)")
    return unnamed


def _unnamed_links(origin: ArgumentOrigin, context: Context) -> list[tuple[str, str]]:
    """Links to hosts the user never named, copied from untrusted text or made up by the model (phishing)."""
    urls = URL_RE.findall(unquote(origin.value))
    if origin.name in LINK_ARGUMENTS:
        urls.append(origin.value.strip())
    found = []
    for url in dict.fromkeys(urls):
        host, ident = host_of(url), normalize(url)
        labels = origin.labels.get(ident)
        if not host or context.host_is_user_named(host) or labels is None:
            continue
        if not labels:
            found.append((ident, "a link the model wrote"))
        elif not vouched(labels) and any(label.startswith("untrusted:") for label in labels):
            found.append((ident, "a link from an untrusted page"))
    return found


def _allowed_because(tool: Tool, override: Action | None) -> str:
    if override == "allow":
        return f"configured: {tool.name} -> allow"
    if not tool.effects:
        return "read-only tool"
    effects = ", ".join(sorted(str(e) for e in tool.effects))
    return f"effects ({effects}) allowed: arguments and context have clean provenance"


def _action(value: Any, where: str) -> Action:
    if value not in ACTIONS:
        raise PolicyConfigError(f"{where} must be one of {', '.join(ACTIONS)}, not {value!r}")
    return cast(Action, value)
