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
* :func:`pull` asks the hub through ``huggingface_hub`` (the real client: ``HF_ENDPOINT``,
  ``HF_TOKEN`` and its URL layout work as for every hub tool) for the file's URL, size and
  sha256 (the ``X-Linked-Etag`` of LFS files), then transfers it itself with httpx into a
  persistent ``<file>.part`` beside the target, with a progress bar on stderr. A dropped
  connection, or a pull killed mid-way and run again, continues with an HTTP Range request
  from the last byte on disk (huggingface_hub writes each attempt to a fresh temporary file,
  so its own downloads start over). A lock file keeps two pulls of one file apart. A file
  already there and matching the hub's sha256 is not fetched again.
* Every pulled file is checked against the hub's sha256 before it is renamed into place.
  Bytes that do not verify are deleted: when some came from an earlier attempt (a ``.part``
  resumed) the pull says so and downloads once more from zero; a fresh download that does
  not match raises :class:`ChecksumError`. Files the hub does not hash with sha256 (small
  non-LFS files) are reported as unverified.
* :func:`llmos.models.resolve_model` turns a short name or ``hf:`` id into the local path of a pulled
  file; a model that was not pulled raises :class:`~llmos.models.ModelNotFound` saying how
  to pull it. It never downloads by itself.

Not covered: deleting models, listing a repository's files, sharded (multi-file) GGUFs.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_errors import LlmosError


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
ATTEMPTS = 5  # connections one pull opens (each resuming the .part) before it gives up


class PullError(LlmosError, RuntimeError):
    """The model could not be pulled (bad name, hub error); the message says why."""


class ChecksumError(PullError):
    """The downloaded bytes do not match the hub's sha256."""


@dataclass(frozen=True)
class Pulled:
    path: Path
    sha256: str
    verified: bool  # the hub published a sha256 and it matched


def models_dir() -> Path:
    """``$LLMOS_HOME/models`` (:func:`llmos_tools.cache.llmos_home`, the one home folder)."""
    from llmos_tools.cache import llmos_home

    return llmos_home() / "models"


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pull(
    name: str,
    *,
    root: Path | None = None,
    progress: bool = True,
    endpoint: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Pulled:
    """Download (or find up to date) one GGUF file and verify it; return where it is."""
    from filelock import FileLock
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers

    log = log or (lambda line: print(f"llmos: {line}", file=sys.stderr))
    hub = parse_name(name)
    target = hub.local_path(root or models_dir())
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, at import.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    failures: tuple[type[Exception], ...] = (HfHubHTTPError, *_network_errors())
    try:
        url = hf_hub_url(hub.repo, hub.filename, revision=hub.revision, endpoint=endpoint)
        metadata = get_hf_file_metadata(url, endpoint=endpoint)
    except failures as exc:
        if target.is_file() and not isinstance(exc, HfHubHTTPError):  # offline: what is there is what we have
            log(f"cannot reach the hub ({exc}); {target} is there but was not checked against it")
            return Pulled(target, sha256_of(target), verified=False)
        raise PullError(f"cannot pull {name}: {exc}") from None
    expected = (metadata.etag or "").lower()
    sha = expected if SHA256.match(expected) else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.is_file() and metadata.size in (None, target.stat().st_size):
            actual = sha256_of(target)
            if not sha or actual == sha:
                return Pulled(target, actual, verified=bool(sha))
            log(f"{target} does not match the hub's sha256: downloading it again")
        part = target.with_name(target.name + ".part")
        transfer = _Transfer(url, part, metadata.size, build_hf_headers(), progress, hub.filename)
        actual = transfer.run()
        if sha and actual != sha and transfer.resumed:
            part.unlink(missing_ok=True)
            log(f"{part.name}: the bytes kept from an earlier attempt do not verify; downloading again from zero")
            actual = transfer.run()
        if sha and actual != sha:
            part.unlink(missing_ok=True)  # a corrupt model must not be picked up later
            raise ChecksumError(f"{name}: sha256 {actual} does not match the hub's {sha}; the download was removed")
        os.replace(part, target)
    return Pulled(target, actual, verified=bool(sha))


def _network_errors() -> tuple[type[Exception], ...]:
    """What a hub call raises when the network fails: huggingface_hub 1.x uses httpx, 2.x httpx2."""
    import httpx

    errors: list[type[Exception]] = [httpx.HTTPError, OSError]  # OSError: offline mode, refused sockets
    try:
        import httpx2  # type: ignore[import-not-found]

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


class _Transfer:
    """One file into ``part``, resuming from its size with Range requests; :meth:`run` returns the sha256."""

    def __init__(self, url: str, part: Path, size: int | None, headers: dict[str, str], progress: bool, label: str):
        self.url, self.part, self.size, self.label = url, part, size, label
        self.headers = {**headers, "Accept-Encoding": "identity"}  # byte ranges of the file itself
        self.progress = progress
        self.resumed = False  # some of the bytes were on disk before the last request that wrote any
        self.digest = hashlib.sha256()

    def run(self) -> str:
        from huggingface_hub.utils import tqdm

        self.part.touch()
        have = self.part.stat().st_size
        if self.size is not None and have > self.size:
            have = 0  # not this file: start over
        self.digest, self.resumed = hashlib.sha256(), False
        bar = tqdm(
            total=self.size, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=self.label, disable=not self.progress,
        )  # fmt: skip
        with bar, self.part.open("r+b") as out:
            out.truncate(have)
            for block in iter(lambda: out.read(1 << 20), b""):  # hash what is already there
                self.digest.update(block)
            failures = 0
            while self.size is None or out.tell() < self.size:
                try:
                    self._fetch(out, bar)
                    if self.size is None:
                        break  # no size known: one whole response is the file
                except _Retry as exc:
                    failures += 1
                    if failures >= ATTEMPTS:
                        raise PullError(
                            f"{self.url}: {exc} ({ATTEMPTS} attempts); run the pull again to resume "
                            f"from byte {out.tell()}"
                        ) from None
                    time.sleep(min(0.25 * 2 ** (failures - 1), 5.0))
        return self.digest.hexdigest()

    def _fetch(self, out: Any, bar: Any) -> None:
        """One request from ``out.tell()``; raises :class:`_Retry` for what another request may fix."""
        import httpx

        start = out.tell()
        headers = {**self.headers, **({"Range": f"bytes={start}-"} if start else {})}
        timeout = httpx.Timeout(60.0, connect=10.0)
        try:
            with httpx.stream("GET", self.url, headers=headers, follow_redirects=True, timeout=timeout) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise _Retry(f"HTTP {status}")
                if status == 416 or (status == 206 and not _starts_at(response, start)):
                    self._restart(out, bar)
                    raise _Retry(f"the server cannot continue at byte {start}")
                if status not in (200, 206):
                    raise PullError(f"cannot pull {self.url}: HTTP {status}")
                if status == 200 and start:  # the server ignored the range: take the whole file
                    self._restart(out, bar)
                self.resumed = self.resumed or status == 206
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    out.flush()  # a kill -9 keeps every byte that arrived: the next pull resumes there
                    self.digest.update(chunk)
                    bar.update(len(chunk))
        except httpx.TransportError as exc:
            raise _Retry(str(exc) or type(exc).__name__) from None
        if self.size is not None and out.tell() < self.size:
            raise _Retry(f"the response ended at byte {out.tell()} of {self.size}")

    def _restart(self, out: Any, bar: Any) -> None:
        out.seek(0)
        out.truncate()
        self.digest, self.resumed = hashlib.sha256(), False
        bar.reset(total=self.size)


class _Retry(LlmosError):
    pass


def _starts_at(response: Any, start: int) -> bool:
    return response.headers.get("Content-Range", "").startswith(f"bytes {start}-")
