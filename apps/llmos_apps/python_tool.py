"""The ``python`` app: run code in the session's persistent, isolated Jupyter kernel.

Contract
--------
* Tool ``python(code)``. One sandbox per ``ToolContext.session_id`` (served warm
  from a :class:`llmos_sandbox.SandboxPool`), so variables survive between calls;
  every sandbox is closed at interpreter exit.
* numpy, pandas and matplotlib are preloaded as ``np``, ``pd``, ``plt`` with the Agg
  backend. So are ``money(text)`` (:mod:`llmos_sandbox.amounts`, the calculator's reading of
  ``$4.5B``), ``read_page(url)`` and ``page_tables(url)``
  (:mod:`llmos_sandbox.documents`): before each cell the tool writes
  ``ToolContext.documents``, the pages the model has read, where they find them.
  After each cell the kernel saves every open figure as a PNG in its working folder;
  every file the cell created or changed there (figures included) is copied
  into ``ToolContext.workdir`` and attached as an :class:`Artifact`.
  Images the cell displays (``image/png`` outputs) are saved the same way.
* The text the model reads is compact: stdout, the repr of the last value, the
  error's last lines, what the sandbox did (timeout, restart) and the artifacts'
  file names. It is marked untrusted: code can print anything it reads.
* Effects say what the code can reach, from the measured isolation, so the policy
  weighs the ``code`` argument like any tool's: ``Effect.NETWORK`` and
  ``Effect.SENDS_OUT`` when the sandbox cannot cut the network (the code could carry
  the pages, files and results it holds to any host), ``Effect.WRITES`` when it cannot
  confine writes. With every layer in force (network, writes, reads, uid, seccomp,
  quota) the code reaches only its folder and the files handed to it, and the tool
  is read-only. Its output is private data for the policy either way (it may hold
  what the code read). The level is available to the policy and the audit log as
  :func:`isolation` (an :class:`llmos_sandbox.Isolation`), on the tool as
  ``tool.function.isolation``, and in every result's ``data["isolation"]``.

Settings (``ToolContext.settings``, read when the first session starts): ``python.timeout``
(seconds per call, default 60), ``python.pool_size`` (default 1), ``python.strict``
(default false: refuse to run unless every isolation layer is there), ``python.read_paths``
(files and folders the user hands the code, read-only). Not covered: stdin (``input()``
fails), GPU access, packages beyond what the environment has.
"""

from __future__ import annotations

import atexit
import base64
import shutil
import threading
from pathlib import Path
from typing import Any

from llmos_sandbox import CellResult, Isolation, Sandbox, SandboxConfig, SandboxPool, documents, probe
from llmos_tools import Artifact, Effect, Tool, ToolContext, ToolResult, Trust, hookimpl, make_tool

STARTUP_CODE = """
import warnings as _llmos_warnings
_llmos_warnings.filterwarnings("ignore", message=".*non-interactive.*")
import numpy as np
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import os as _llmos_os
_llmos_workdir = _llmos_os.getcwd()
import functools as _llmos_functools
from llmos_sandbox import documents as _llmos_documents
read_page = _llmos_functools.partial(_llmos_documents.read_page, folder=_llmos_workdir)
page_tables = _llmos_functools.partial(_llmos_documents.page_tables, folder=_llmos_workdir)
from llmos_sandbox.amounts import money


# effects come from probing the host's isolation, so they are not fixed by the code: never cache them
LLMOS_CACHE_TOOLS = False

def _llmos_save_figures(result=None):
    import sys
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    cell = get_ipython().execution_count
    for number in pyplot.get_fignums():
        path = _llmos_os.path.join(_llmos_workdir, f"figure_{cell}_{number}.png")
        pyplot.figure(number).savefig(path, dpi=100, bbox_inches="tight")
    pyplot.close("all")

get_ipython().events.register("post_run_cell", _llmos_save_figures)
del _llmos_warnings
"""

MAX_TEXT_CHARS = 6_000  # of stdout, and of the last value, shown to the model
MAX_ARTIFACTS = 20
MAX_ARTIFACT_BYTES = 50 * 2**20
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml", ".csv": "text/csv"}
MIME_TYPES |= {".json": "application/json", ".txt": "text/plain", ".html": "text/html", ".pdf": "application/pdf"}

_lock = threading.Lock()
_pool: SandboxPool | None = None


def isolation() -> Isolation:
    """The isolation level python calls run at (probed once per process)."""
    return _pool.isolation if _pool else probe()


def effects_for(level: Isolation) -> frozenset[Effect]:
    """What the policy must assume the python tool can do at ``level``."""
    effects = set()
    if not level.network:
        effects |= {Effect.NETWORK, Effect.SENDS_OUT}
    if not level.writes:
        effects.add(Effect.WRITES)
    return frozenset(effects)


def sandbox_for(session_id: str, settings: Any = None) -> Sandbox:
    """The session's sandbox (started on first use, from the warm pool)."""
    global _pool
    with _lock:
        if _pool is None:
            settings = settings or {}
            config = SandboxConfig(
                timeout=float(settings.get("python.timeout", 60)),
                startup_code=STARTUP_CODE,
                strict=bool(settings.get("python.strict", False)),
                read_paths=tuple(str(p) for p in settings.get("python.read_paths", ())),
            )
            _pool = SandboxPool(config, size=int(settings.get("python.pool_size", 1)))
        pool = _pool
    return pool.for_session(session_id or "default")


def end_session(session_id: str) -> None:
    if _pool is not None:
        _pool.end_session(session_id or "default")


@atexit.register
def shutdown() -> None:
    """Close every session's sandbox (also run at exit)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


def python(code: str, context: ToolContext) -> ToolResult:
    """Run Python code in a persistent Jupyter kernel; variables survive between calls.
    Pages you have read are there too: page_tables(url) returns a page's tables as pandas
    DataFrames and read_page(url) its text (without a url: the last web page you read);
    money(text) reads an amount as pages write it ("$4.5B" -> 4500000000.0, NaN if none).

    numpy (np), pandas (pd) and matplotlib.pyplot (plt) are loaded. Figures and files the
    code writes in its working folder are returned as attachments. The kernel has no network.

    Args:
        code: Python source; the value of the last line is shown, as in a notebook.
    """
    sandbox = sandbox_for(context.session_id, context.settings)
    documents.write(sandbox.workdir, context.documents)  # read_page / page_tables read them
    before = _snapshot(sandbox.workdir)
    result = sandbox.run(code)
    artifacts = _collect_files(sandbox.workdir, before, Path(context.workdir))
    artifacts += _save_images(result, Path(context.workdir))
    for artifact in artifacts:
        context.emit("artifact", {"path": str(artifact.path), "mime": artifact.mime})
    return ToolResult(
        text=render(result, artifacts),
        trust=Trust.UNTRUSTED,
        source="python",
        artifacts=artifacts,
        is_error=not result.ok,
        data={"isolation": sandbox.isolation.as_dict(), "run": result},
    )


def render(result: CellResult, artifacts: list[Artifact]) -> str:
    """The compact text the model reads."""
    parts: list[str] = []
    if result.stdout.strip():
        parts.append(_clip(result.stdout.rstrip()))
    if result.output_truncated:
        files = ", ".join(str(Path(".output") / p.name) for p in result.overflow_files) or "(dropped)"
        parts.append(f"[output truncated; the full text is in {files}]")
    if result.stderr.strip() and result.error is None:
        parts.append("stderr:\n" + _clip(result.stderr.rstrip(), 1_500))
    if result.value is not None:
        parts.append("Out: " + _clip(result.value))
    if result.error is not None:
        headline = f"{result.error.name}: {result.error.value}".strip()
        body = result.error.last_lines().removesuffix(headline).rstrip()
        parts.append(f"{headline}\n{body}" if body else headline)
    parts += [f"[sandbox] {note}" for note in result.notes]
    if artifacts:
        parts.append("files: " + ", ".join(a.path.name for a in artifacts))
    return "\n".join(parts) or "(no output)"


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit:,} more characters]"


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    """Visible files under ``folder`` with (mtime, size); hidden folders (.output, …) are skipped."""
    found: dict[Path, tuple[int, int]] = {}
    for path in folder.rglob("*"):
        if len(found) >= 5_000:
            break
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file() or path.is_symlink():
            continue
        stat = path.stat()
        found[relative] = (stat.st_mtime_ns, stat.st_size)
    return found


def _collect_files(folder: Path, before: dict[Path, tuple[int, int]], target: Path) -> list[Artifact]:
    after = _snapshot(folder)
    changed = sorted(p for p, stamp in after.items() if before.get(p) != stamp)
    artifacts = []
    for relative in changed[:MAX_ARTIFACTS]:
        if after[relative][1] > MAX_ARTIFACT_BYTES:
            continue
        destination = _free_name(target / relative.name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / relative, destination)
        mime = MIME_TYPES.get(destination.suffix.lower(), "application/octet-stream")
        artifacts.append(Artifact(destination, mime, f"{relative} written by python"))
    return artifacts


def _save_images(result: CellResult, target: Path) -> list[Artifact]:
    artifacts: list[Artifact] = []
    for index, output in enumerate(result.outputs):
        if "image/png" in output.data and len(artifacts) < MAX_ARTIFACTS:
            destination = _free_name(target / f"output_{result.execution_count}_{index}.png")
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(base64.b64decode(output.data["image/png"]))
            artifacts.append(Artifact(destination, "image/png", "image displayed by python"))
    return artifacts


def _free_name(path: Path) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``… when it exists, so nothing is overwritten."""
    candidate = path
    for number in range(1, 10_000):
        if not candidate.exists():
            return candidate
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def build_tool() -> Tool:
    """The ``python`` tool, its effects set from the isolation this host really gives."""
    level = isolation()
    built = make_tool(python, name="python", effects=effects_for(level))
    python.isolation = level  # type: ignore[attr-defined]
    return built


@hookimpl
def register_tools(register: Any) -> None:
    register(build_tool())
