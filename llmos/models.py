"""Choosing a model: a spec string becomes a CPU and the dialect it speaks.

Specs: ``None`` or ``"default"`` (the bundled llmos-tiny), a path to a GGUF file,
or an ``http(s)://`` URL of an OpenAI-compatible server. The dialect is detected
from the model unless given: a vocabulary with the ``<|call|>`` control token
speaks llmos; a chat template that mentions ``<tool_call>`` speaks hermes;
anything else gets the generic dialect.

Not covered here: downloading models (``llmos pull``, another module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmos.cpu.base import CPU, CPUError
from llmos.dialects import Dialect, get_dialect

BUNDLED = Path(__file__).parent / "tiny" / "llmos-tiny.gguf"


class ModelNotFound(CPUError):
    """No model matches the spec; the message says how to get one."""


@dataclass
class Machine:
    cpu: CPU
    dialect: Dialect
    spec: str


def default_model() -> Path:
    override = os.environ.get("LLMOS_MODEL")
    if override:
        return Path(override)
    if BUNDLED.is_file():
        return BUNDLED
    raise ModelNotFound(
        "no model configured and the bundled llmos-tiny is not built: pass --model PATH.gguf, "
        "--model http://host:port for an OpenAI-compatible server, or set LLMOS_MODEL"
    )


def open_machine(
    spec: str | None = None, *, dialect: str | None = None, n_ctx: int = 2048, n_threads: int | None = None
) -> Machine:
    """Open the CPU named by ``spec`` and pick its dialect."""
    if spec and spec.startswith(("http://", "https://")):
        from llmos.cpu.http import HttpCPU

        chosen = get_dialect(dialect or "llmos")
        return Machine(HttpCPU(spec, n_ctx=n_ctx, markers=chosen.markers), chosen, spec)
    path = default_model() if spec in (None, "", "default") else Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"model file not found: {path}")
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(path, n_ctx=n_ctx, n_threads=n_threads)
    return Machine(cpu, _dialect_for(cpu, dialect), str(path))


def _dialect_for(cpu, name: str | None) -> Dialect:
    if name == "hermes" or (name is None and "<tool_call>" in cpu.metadata("tokenizer.chat_template")):
        return get_dialect("hermes", chat_template=cpu.metadata("tokenizer.chat_template"))
    if name:
        return get_dialect(name)
    return get_dialect("llmos" if cpu.token_id("<|call|>") is not None else "generic")
