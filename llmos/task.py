"""Task files for ``llmos run``: a prompt, a model, tools and budgets, validated at the edge.

    prompt: What is 15% of 1,240?
    model: default            # or a GGUF path, or http://host:port
    dialect: llmos            # optional: llmos | hermes | generic (detected otherwise)
    tools: [calculator]       # optional: default all installed tools
    force_call: false         # force the first step to be a tool call (grammar)
    n_ctx: 2048
    budgets: {steps: 8, tokens: 2048, seconds: 300}
    sampling: {temperature: 0, seed: 0}

Unknown keys are errors with a "did you mean" hint; a bad file raises
:class:`TaskError` naming the file. Relative model paths resolve against the task
file's folder. Not covered yet: outputs, checks, ingesting files, web mode (the
full runner grows this format).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.cpu.base import Sampling
from llmos.kernel import Budgets

KEYS = {"prompt", "model", "dialect", "tools", "force_call", "n_ctx", "budgets", "sampling", "system"}
BUDGET_KEYS = {"steps": "max_steps", "tokens": "max_tokens", "seconds": "max_seconds", "step_tokens": "max_step_tokens"}
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "repeat_penalty", "seed"}


class TaskError(ValueError):
    """The task file is not valid; the message says where and why."""


@dataclass
class Task:
    prompt: str
    model: str | None = None
    dialect: str | None = None
    tools: list[str] | None = None
    force_call: bool = False
    n_ctx: int = 2048
    system: str | None = None
    budgets: Budgets = field(default_factory=Budgets)
    sampling: Sampling = field(default_factory=Sampling)


def _unknown(keys: set[str], known: set[str], where: str) -> None:
    for key in sorted(keys - known):
        hint = difflib.get_close_matches(key, sorted(known), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(sorted(known))}"
        raise TaskError(f"{where}: unknown key {key!r}{suggestion}")


def load_task(path: str | Path) -> Task:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"{path}: cannot read the task file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML: {exc}") from None
    return parse_task(data, str(path), base=path.parent)


def parse_task(data: Any, where: str = "task", base: Path | None = None) -> Task:
    if not isinstance(data, dict):
        raise TaskError(f"{where}: a task file must be a mapping with at least a 'prompt'")
    _unknown(set(data), KEYS, where)
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskError(f"{where}: 'prompt' must be a non-empty string")
    model = data.get("model")
    if isinstance(model, str) and base and not model.startswith(("http://", "https://")) and model != "default":
        candidate = (base / model).expanduser()
        model = str(candidate if candidate.exists() else Path(model).expanduser())
    tools = data.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, str) for t in tools)):
        raise TaskError(f"{where}: 'tools' must be a list of tool names")
    budgets = data.get("budgets") or {}
    sampling = data.get("sampling") or {}
    if not isinstance(budgets, dict) or not isinstance(sampling, dict):
        raise TaskError(f"{where}: 'budgets' and 'sampling' must be mappings")
    _unknown(set(budgets), set(BUDGET_KEYS), f"{where}: budgets")
    _unknown(set(sampling), SAMPLING_KEYS, f"{where}: sampling")
    try:
        return Task(
            prompt=prompt,
            model=model,
            dialect=data.get("dialect"),
            tools=tools,
            force_call=bool(data.get("force_call", False)),
            n_ctx=int(data.get("n_ctx", 2048)),
            system=data.get("system"),
            budgets=Budgets(**{BUDGET_KEYS[k]: v for k, v in budgets.items()}),
            sampling=Sampling(**sampling),
        )
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{where}: {exc}") from None
