"""The policy kernel: allow, ask or deny each tool call.

The model is assumed compromisable (jailbreaks, prompt injection, poisoned
weights), so the decision is made here, from facts the model cannot forge: the
tool's *declared* effects and whether untrusted text (web pages, files, tool
output) is in the context that produced the call.

Default rules (each decision lists the rules that fired as its reasons):

* a read-only tool is allowed;
* a tool that sends data out (``Effect.SENDS_OUT``) is asked about when untrusted
  text is in the context, because that is the prompt-injection exfiltration path;
* a tool that writes (``Effect.WRITES``) is asked about when untrusted text is in
  the context;
* per-tool overrides (``overrides={"python": "ask"}``) win over the rules.

An "ask" becomes an :class:`~llmos.events.ApprovalRequest` bound to a digest of the
exact arguments; without an approver it is denied. Finer provenance (which value
came from which page) is not covered yet: the context-level taint used here is the
conservative approximation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmos_tools import Effect, Tool

if TYPE_CHECKING:
    from llmos.dialects.base import Turn

Action = Literal["allow", "ask", "deny"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...] = ()


def call_digest(name: str, arguments: Mapping[str, Any]) -> str:
    """A hash of the exact call: an approval is valid for these arguments only."""
    canonical = json.dumps({"name": name, "arguments": arguments}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Policy:
    overrides: dict[str, Action] = field(default_factory=dict)

    def decide(self, tool: Tool, arguments: Mapping[str, Any], *, turns: Sequence[Turn]) -> Decision:
        """Decide one call, given the conversation that produced it."""
        untrusted_context = any(t.role == "result" and not t.trusted for t in turns)
        if tool.name in self.overrides:
            action = self.overrides[tool.name]
            return Decision(action, (f"configured: {tool.name} -> {action}",))
        if not tool.effects:
            return Decision("allow", ("read-only tool",))
        if untrusted_context and Effect.SENDS_OUT in tool.effects:
            return Decision("ask", ("the tool sends data out and untrusted text is in the context",))
        if untrusted_context and Effect.WRITES in tool.effects:
            return Decision("ask", ("the tool writes and untrusted text is in the context",))
        effects = ", ".join(sorted(str(e) for e in tool.effects))
        return Decision("allow", (f"effects ({effects}) allowed by default",))
