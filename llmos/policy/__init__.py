"""Protection: provenance labels, the policy kernel, approvals and safe rendering.

* :class:`Policy` decides allow / ask / deny for each call (rules and config shape in
  :mod:`llmos.policy.rules`), from declared effects and the provenance computed in
  :mod:`llmos.policy.provenance`;
* :func:`call_digest` binds an approval to the exact call: the kernel puts it in the
  :class:`~llmos.events.ApprovalRequest`, and an approval is valid for that digest only;
* :func:`render_safe` shows model text with links and images as text, never fetched;
* :func:`plan_tool` is the ``plan`` tool a model calls to declare its plan before reading
  untrusted text (:mod:`llmos.policy.plan`; ``llmos run`` adds it under ``plan: required``).

Approvals come only through the kernel's approver callback; nothing the model or a
page writes is read as an approval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from llmos.policy.plan import plan_tool
from llmos.policy.render import render_safe
from llmos.policy.rules import Action, Decision, Policy, PolicyConfigError

__all__ = ["Action", "Decision", "Policy", "PolicyConfigError", "call_digest", "plan_tool", "render_safe"]


def call_digest(name: str, arguments: Mapping[str, Any]) -> str:
    """A hash of the exact call: an approval is valid for these arguments only."""
    canonical = json.dumps({"name": name, "arguments": arguments}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
