"""Task files for ``llmos run``: validated once, at the edge, into a typed :class:`Task`.

The format is documented in ``docs/task-format.md``; ``docs/task.schema.json`` is
generated from :class:`Task` (``python -m llmos_shell.task > docs/task.schema.json``) so
editors can complete and check task files. A minimal task::

    prompt: What is 15% of 1,240?
    model: default            # llmos-smol | a GGUF path | hf:owner/repo/file.gguf or a short name | http://host:port
    tools: {calculator: allow, python: ask}   # or a list of names
    budgets: {steps: 8, tokens: 2048, seconds: 300}
    checks:
      - answer_matches: "186"

Contract
--------
* :func:`load_task` reads YAML and returns a :class:`Task` or raises :class:`TaskError`
  whose message names the file and the line of each problem; unknown keys get a
  "did you mean …?" hint.
* Relative paths (model file, ``ingest`` files, ``web: archive:PATH``) resolve against
  the task file's folder; check and output paths are relative to the run folder.
* :class:`Task` knows how to become the kernel's inputs (:meth:`Task.kernel_budgets`,
  :meth:`Task.cpu_sampling`, :meth:`Task.tool_names`, :meth:`Task.policy_config`,
  :meth:`Task.kernel_settings`); it does not run anything (see :mod:`llmos_shell.runner`).

Not covered: includes or templating between task files, environment-variable expansion.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmos_errors import LlmosError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from llmos.cpu.base import Sampling
    from llmos.kernel import Budgets

Action = Literal["allow", "ask", "deny"]


class TaskError(LlmosError, ValueError):
    """The task file is not valid; the message says where (file:line) and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskBudgets(_Strict):
    """Limits for the whole run; running out ends it with exit code 3."""

    steps: int = Field(16, ge=0, description="most tool calls")
    tokens: int = Field(4096, ge=1, description="most generated tokens")
    seconds: float = Field(600.0, gt=0, description="most wall-clock seconds")
    step_tokens: int = Field(1024, ge=1, description="most tokens in one generation (a model that never stops)")


class TaskSampling(_Strict):
    """Decoding settings; temperature 0 is greedy."""

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repeat_penalty: float = Field(1.0, gt=0)
    dry_multiplier: float = Field(0.0, ge=0, description="DRY penalty on repeats of earlier text; 0 is off")
    dry_allowed_length: int = Field(2, ge=1, description="longest repeat DRY lets pass, in tokens")
    seed: int = 0
    constrain_calls: bool = Field(
        True, description="keep the model's calls well-formed JSON with the dialect's call grammar (local models)"
    )


class Check(_Strict):
    """One check on the outcome; exactly one key per check. Any failure gives exit code 4."""

    answer_matches: str | None = Field(None, description="a regular expression the answer must match (re.search)")
    answer_contains: str | None = Field(None, description="text the answer must contain")
    file_exists: str | None = Field(None, description="a path relative to the run folder, e.g. artifacts/plot.png")

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a check has exactly one of {', '.join(type(self).model_fields)}; got {given or 'none'}")
        return self

    @field_validator("answer_matches")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("file_exists")
    @classmethod
    def _inside_run_folder(cls, value: str | None) -> str | None:
        if value is not None:
            _relative_inside(value)
        return value

    def describe(self) -> str:
        name = next(n for n in type(self).model_fields if getattr(self, n) is not None)
        return f"{name}: {getattr(self, name)}"


class Task(_Strict):
    """A task: what to ask, on which model, with which tools, within which limits, checked how."""

    prompt: str = Field(min_length=1, description="what to ask")
    title: str | None = Field(None, description="a name for the run (default: the file name)")
    model: str | None = Field(
        None,
        description="'default' (llmos-smol, or $LLMOS_MODEL), a GGUF path, 'hf:owner/repo/file.gguf' or a short name "
        "(see `llmos models`), or an http(s):// OpenAI-compatible endpoint",
    )
    dialect: Literal["llmos", "hermes", "openai", "generic"] | None = Field(
        None, description="default: detected from the model"
    )
    n_ctx: int = Field(4096, ge=64, description="context window in tokens")
    system: str | None = Field(None, description="system prompt (default: the dialect's)")
    force_call: bool = Field(False, description="force the first step to be a tool call (grammar)")
    tools: list[str] | dict[str, Action] | None = Field(
        None, description="tool names, or name -> allow|ask|deny; default: every installed tool, default policy"
    )
    policy: dict[str, Any] | None = Field(
        None,
        description="the policy config (llmos.policy: taint, hosts, tools, actions, plan); `tools:` actions merge in",
    )
    ingest: list[str] = Field(default_factory=list, description="files to put in memory before the run")
    web: str = Field("live", description="'live' or 'archive:PATH' (an offline web archive)")
    budgets: TaskBudgets = Field(default_factory=TaskBudgets)  # type: ignore[arg-type]
    sampling: TaskSampling = Field(default_factory=TaskSampling)  # type: ignore[arg-type]
    outputs: list[str] = Field(
        default_factory=list, description="files the tools must write, relative to the run's artifacts/ folder"
    )
    checks: list[Check] = Field(default_factory=list)

    @field_validator("web")
    @classmethod
    def _web_mode(cls, value: str) -> str:
        if value != "live" and not (value.startswith("archive:") and len(value) > len("archive:")):
            raise ValueError("web must be 'live' or 'archive:PATH'")
        return value

    @field_validator("policy")
    @classmethod
    def _policy_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from llmos.policy import Policy

        Policy.from_config(value)  # raises PolicyConfigError (a ValueError) with the key at fault
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_inside(cls, value: list[str]) -> list[str]:
        for path in value:
            _relative_inside(path)
        return value

    # -- what the kernel needs ---------------------------------------------------------

    def tool_names(self) -> list[str] | None:
        """The tools the model sees; denied tools are not even shown to it."""
        if self.tools is None:
            return None
        if isinstance(self.tools, list):
            return list(self.tools)
        return [name for name, action in self.tools.items() if action != "deny"]

    def policy_overrides(self) -> dict[str, Action]:
        return dict(self.tools) if isinstance(self.tools, dict) else {}

    def policy_config(self) -> dict[str, Any]:
        """``policy:`` with the ``tools:`` actions merged into its per-tool overrides."""
        config = dict(self.policy or {})
        overrides = self.policy_overrides()
        if overrides:
            config["tools"] = {**(config.get("tools") or {}), **overrides}
        return config

    def kernel_budgets(self) -> Budgets:
        from llmos.kernel import Budgets

        b = self.budgets
        return Budgets(max_steps=b.steps, max_tokens=b.tokens, max_seconds=b.seconds, max_step_tokens=b.step_tokens)

    def cpu_sampling(self, model_default: Sampling | None = None) -> Sampling:
        """The model's own decoding settings (``model_default``) with the fields this task file sets over them."""
        import dataclasses

        from llmos.cpu.base import Sampling

        return dataclasses.replace(model_default or Sampling(), **self.sampling.model_dump(exclude_unset=True))

    def kernel_settings(self) -> dict[str, Any]:
        return {"ingest": list(self.ingest), "web": self.web}

    def resolved(self, base: Path) -> Task:
        """The task with its input paths made absolute against ``base`` (the task file's folder)."""
        changes: dict[str, Any] = {"ingest": [str(_against(base, p)) for p in self.ingest]}
        if self.model and _is_path_spec(self.model):
            changes["model"] = str(_against(base, self.model))
        if self.web.startswith("archive:"):
            changes["web"] = "archive:" + str(_against(base, self.web[len("archive:") :]))
        return self.model_copy(update=changes)


def _is_path_spec(model: str) -> bool:
    """Everything that is not ``default``, a URL, a hub id, or a model's name (known, packaged, a fine-tune,
    llmos-tiny) is a path."""
    if model == "default" or model.startswith(("http://", "https://", "hf:")):
        return False
    from llmos.models import FINE_TUNES, PACKAGED_MODELS, TINY
    from llmos.pull import KNOWN_MODELS  # light: a dict, no hub import

    return model not in {*KNOWN_MODELS, *PACKAGED_MODELS, *FINE_TUNES, TINY}


def _against(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _relative_inside(value: str) -> None:
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a relative path inside the run folder")


# -- loading -------------------------------------------------------------------------------


def load_task(path: str | Path) -> Task:
    """Read and validate a task file; raise :class:`TaskError` naming file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"{path}: cannot read the task file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TaskError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_task(data, str(path), base=path.parent.resolve(), lines=lines)


def parse_task(
    data: Any, where: str = "task", base: Path | None = None, lines: dict[tuple[Any, ...], int] | None = None
) -> Task:
    """Validate already-parsed data; ``lines`` maps key paths to line numbers for messages."""
    if not isinstance(data, dict):
        raise TaskError(f"{where}: a task file must be a mapping with at least a 'prompt'")
    try:
        task = Task.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, where, lines or {}) for error in exc.errors()]
        raise TaskError("\n".join(dict.fromkeys(problems))) from None
    return task.resolved(base) if base is not None else task


def _describe(error: Any, where: str, lines: dict[tuple[Any, ...], int]) -> str:
    loc = tuple(error["loc"])
    line = _line_for(loc, lines)
    place = f"{where}:{line}" if line else where
    dotted = ".".join(str(part) for part in loc) or "task"
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
        return f"{place}: unknown key {dotted!r}{suggestion}"
    if error["type"] == "missing":
        return f"{place}: {dotted!r} is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{place}: {dotted}: {message}"


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    # Union members add their own names to the path (e.g. "list[str]"); drop them until a key matches.
    path = tuple(part for part in loc if isinstance(part, int) or part in lines or _is_key(part, lines))
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _is_key(part: Any, lines: dict[tuple[Any, ...], int]) -> bool:
    return any(part in key for key in lines)


NESTED: dict[str, type[BaseModel]] = {"budgets": TaskBudgets, "sampling": TaskSampling, "checks": Check}


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    names = [part for part in parent if isinstance(part, str)]
    model: type[BaseModel] = NESTED.get(names[0], Task) if names else Task
    return sorted(model.model_fields)


def _key_lines(node: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """1-based line of every mapping key and sequence item, keyed by its path."""
    import yaml

    found: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            found[child] = key.start_mark.line + 1
            found.update(_key_lines(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            child = (*path, index)
            found[child] = value.start_mark.line + 1
            found.update(_key_lines(value, child))
    return found


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a task file (what ``docs/task.schema.json`` holds)."""
    schema = Task.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "llmos task file"}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
