"""Model management: list the models llmos can use, and pull GGUF files from the Hugging Face Hub.

Names
-----
* a short name from :data:`KNOWN_MODELS` (``qwen2.5-0.5b``, ``qwen2.5-1.5b``, ``qwen2.5-3b``: small
  instruction models with a native tool-call format, the official Qwen GGUF repositories);
* ``hf:owner/repo/file.gguf`` (``owner/repo/file.gguf`` is accepted by ``llmos pull``), with an
  optional ``@revision`` at the end.

Contract
--------
* The cache folder is ``$LLMOS_HOME/models`` (``~/.local/share/llmos/models``); a pulled file
  lands at ``<cache>/<owner>--<repo>/<file>``, an ordinary path any tool can open.
* :func:`pull` downloads through ``huggingface_hub.hf_hub_download`` (the real client, so
  ``HF_ENDPOINT``, ``HF_TOKEN`` and proxies work as they do for every hub tool): a progress bar
  on stderr; a dropped connection is resumed with an HTTP Range request from the last byte
  received; a file already there and unchanged is not fetched again. huggingface_hub (1.x, 2.x)
  writes each attempt to a fresh temporary file, so a pull killed mid-way (Ctrl-C) starts over.
* Every pulled file is checked against the sha256 the hub publishes for LFS files (the
  ``X-Linked-Etag`` header). A mismatch deletes the file and raises :class:`ChecksumError`.
  Files the hub does not hash with sha256 (small non-LFS files) are reported as unverified.
* :func:`resolve_model` turns a short name or ``hf:`` id into the local path of a pulled
  file; a model that was not pulled raises :class:`~llmos.models.ModelNotFound` saying how
  to pull it. It never downloads by itself.

Not covered: deleting models, listing a repository's files, sharded (multi-file) GGUFs.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    revision: str = "main"

    def local_path(self, root: Path) -> Path:
        return root / self.repo.replace("/", "--") / self.filename


KNOWN_MODELS: dict[str, HubFile] = {
    "qwen2.5-0.5b": HubFile("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-1.5b": HubFile("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-3b": HubFile("Qwen/Qwen2.5-3B-Instruct-GGUF", "qwen2.5-3b-instruct-q4_k_m.gguf"),
}

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PullError(RuntimeError):
    """The model could not be pulled (bad name, hub error); the message says why."""


class ChecksumError(PullError):
    """The downloaded bytes do not match the hub's sha256."""


@dataclass(frozen=True)
class Pulled:
    path: Path
    sha256: str
    verified: bool  # the hub published a sha256 and it matched


def models_dir() -> Path:
    home = os.environ.get("LLMOS_HOME") or "~/.local/share/llmos"
    return Path(home).expanduser() / "models"


def parse_name(name: str) -> HubFile:
    """A short name or ``[hf:]owner/repo/path/file.gguf[@revision]``."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    spec = name.removeprefix("hf:")
    spec, _, revision = spec.partition("@")
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf"):
        known = ", ".join(KNOWN_MODELS)
        raise PullError(f"{name!r} is not a known model ({known}) nor owner/repo/file.gguf")
    return HubFile("/".join(parts[:2]), "/".join(parts[2:]), revision or "main")


def resolve_model(spec: str, root: Path | None = None) -> Path:
    """The local file of a pulled short name or ``hf:`` id (never downloads)."""
    from llmos.models import ModelNotFound

    try:
        path = parse_name(spec).local_path(root or models_dir())
    except PullError as exc:
        raise ModelNotFound(str(exc)) from None
    if not path.is_file():
        raise ModelNotFound(f"model {spec!r} is not pulled yet: run `llmos pull {spec}` (it goes to {path})")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pull(name: str, *, root: Path | None = None, progress: bool = True, endpoint: str | None = None) -> Pulled:
    """Download (or find up to date) one GGUF file and verify it; return where it is."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    hub = parse_name(name)
    target = hub.local_path(root or models_dir())
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, at import.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        url = hf_hub_url(hub.repo, hub.filename, revision=hub.revision, endpoint=endpoint)
        expected = (get_hf_file_metadata(url).etag or "").lower()
        downloaded = hf_hub_download(
            hub.repo,
            hub.filename,
            revision=hub.revision,
            local_dir=target.parent,
            endpoint=endpoint,
            tqdm_class=None if progress else _quiet_tqdm(),
        )
    except HfHubHTTPError as exc:
        raise PullError(f"cannot pull {name}: {exc}") from None
    path = Path(downloaded)
    actual = sha256_of(path)
    if SHA256.match(expected) and actual != expected:
        path.unlink(missing_ok=True)  # a corrupt model must not be picked up later
        raise ChecksumError(f"{name}: sha256 {actual} does not match the hub's {expected}; the file was removed")
    return Pulled(path, actual, verified=bool(SHA256.match(expected)))


def _quiet_tqdm() -> type:
    from huggingface_hub.utils import tqdm

    class Quiet(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


@dataclass(frozen=True)
class ModelEntry:
    kind: str  # bundled | configured | local | known
    name: str
    path: str  # empty for a known model that is not pulled
    size: int = 0


def list_models(root: Path | None = None) -> list[ModelEntry]:
    """The bundled model, the configured one ($LLMOS_MODEL), pulled files, and known short names."""
    from llmos.models import BUNDLED

    root = root or models_dir()
    entries: list[ModelEntry] = []
    if BUNDLED.is_file():
        entries.append(ModelEntry("bundled", "default", str(BUNDLED), BUNDLED.stat().st_size))
    configured = os.environ.get("LLMOS_MODEL")
    if configured:
        entries.append(ModelEntry("configured", "$LLMOS_MODEL", configured, _size(Path(configured))))
    pulled = {str(hub.local_path(root)): short for short, hub in KNOWN_MODELS.items()}
    for path in sorted(root.glob("*/**/*.gguf")) if root.is_dir() else []:
        if ".cache" in path.relative_to(root).parts:
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
