"""The public API: one front door, ``import llmos``, lazy and pinned."""

from __future__ import annotations

import subprocess
import sys

import llmos

PUBLIC = [
    "ApprovalRequest",
    "Budgets",
    "CPU",
    "CPUError",
    "Call",
    "ChatCPU",
    "ChatTemplateError",
    "ContextOverflow",
    "Decision",
    "Dialect",
    "Done",
    "Event",
    "HttpCPU",
    "Kernel",
    "LlamaCPU",
    "LlmosError",
    "Machine",
    "ModelNotFound",
    "Piece",
    "Policy",
    "PolicyConfigError",
    "Processes",
    "Sampling",
    "ScriptedCPU",
    "Segment",
    "Session",
    "SessionStore",
    "StoreError",
    "Turn",
    "get_dialect",
    "open_machine",
    "scripted_call",
]


def test_the_public_api_is_pinned_and_sorted() -> None:
    assert llmos.__all__ == sorted(PUBLIC)  # a change here is a change of the public API: say so in the README


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    for name in llmos.__all__:
        value = getattr(llmos, name)
        assert getattr(value, "__name__", name) == name


def test_the_runtime_front_door_leads_to_no_shell() -> None:
    assert not [name for name in llmos.__all__ if llmos._EXPORTS[name].startswith("llmos_shell")]


def test_importing_llmos_loads_nothing_heavy() -> None:
    code = "import sys, llmos; print(sorted(m for m in sys.modules if m.startswith(('llmos.', 'llama_cpp', 'httpx'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        llmos.Nope  # noqa: B018
    except AttributeError as error:
        assert "Nope" in str(error)
    else:
        raise AssertionError("llmos.Nope resolved")
