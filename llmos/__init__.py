"""llmos: a local-first LLM operating system.

The model is the CPU, the context window is RAM, tools are apps reached through system
calls that the kernel traps in the token stream. This module is the public front door:
every name in :data:`__all__` is importable from ``llmos`` and loads its module on first
use, so ``import llmos`` stays fast. Modules not reached through it are private by
intent, even where their names have no underscore yet.
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> the module that defines it (loaded lazily by __getattr__)
_EXPORTS = {
    "ApprovalRequest": "llmos.events",
    "Budgets": "llmos.kernel",
    "CPU": "llmos.cpu.base",
    "CPUError": "llmos.cpu.base",
    "Call": "llmos.dialects.base",
    "ChatCPU": "llmos.cpu.chat",
    "ChatTemplateError": "llmos.dialects.hermes",
    "ContextOverflow": "llmos.cpu.base",
    "Decision": "llmos.policy",
    "Dialect": "llmos.dialects.base",
    "Done": "llmos.events",
    "Event": "llmos.events",
    "HttpCPU": "llmos.cpu.http",
    "Kernel": "llmos.kernel",
    "LlamaCPU": "llmos.cpu.llama",
    "LlmosError": "llmos_errors",
    "Machine": "llmos.models",
    "ModelNotFound": "llmos.models",
    "Piece": "llmos.cpu.base",
    "Policy": "llmos.policy",
    "PolicyConfigError": "llmos.policy",
    "Processes": "llmos.processes",
    "Sampling": "llmos.cpu.base",
    "ScriptedCPU": "llmos.testing",
    "Segment": "llmos.cpu.base",
    "Session": "llmos.session",
    "SessionStore": "llmos.store",
    "StoreError": "llmos.store",
    "Turn": "llmos.dialects.base",
    "get_dialect": "llmos.dialects",
    "open_machine": "llmos.models",
    "scripted_call": "llmos.testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    import importlib

    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
