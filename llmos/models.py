"""Choosing a model: a spec string becomes a CPU and the dialect it speaks.

Specs: ``None`` or ``"default"`` (the bundled llmos-tiny), a path to a GGUF file,
a pulled model by its short name (``qwen2.5-1.5b``) or ``hf:owner/repo/file.gguf`` id
(:func:`resolve_spec`, the one path the CLI, the TUI and the task runner share), or an
``http(s)://`` URL of an OpenAI-compatible server. The dialect is detected
from the model unless given: a vocabulary with the ``<|call|>`` control token
speaks llmos; a chat template that mentions ``<tool_call>`` speaks hermes;
anything else gets the generic dialect.

Not covered here: downloading models (``llmos pull``, :mod:`llmos.pull`); a short name or
``hf:`` id that was not pulled raises :class:`ModelNotFound` saying how to pull it.
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


def resolve_spec(spec: str | None) -> str | None:
    """A short name or ``hf:`` id becomes the path of the pulled file; anything else is as given."""
    from llmos.pull import KNOWN_MODELS, resolve_model

    if spec and (spec.startswith("hf:") or (spec in KNOWN_MODELS and not Path(spec).is_file())):
        return str(resolve_model(spec))
    return spec


def open_machine(
    spec: str | None = None, *, dialect: str | None = None, n_ctx: int = 2048, n_threads: int | None = None
) -> Machine:
    """Open the CPU named by ``spec`` (see the module docstring) and pick its dialect."""
    spec = resolve_spec(spec)
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
