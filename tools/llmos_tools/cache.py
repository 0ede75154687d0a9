"""The plugin spec cache: what each entry point registered, so a warm start imports no plugin.

One JSON file per Python environment, ``$LLMOS_HOME/cache/plugins-<hash of
sys.prefix>.json`` (``LLMOS_HOME`` defaults to ``~/.local/share/llmos``), maps an
entry-point name to a *stamp* and the specs of its tools (name, description,
parameters, effects, whether it takes a context).

The stamp is the entry point's target, its distribution's name and version, and
the newest modification time and total size of the ``.py`` files in the plugin's
top-level package, found without importing it. Editing, upgrading or reinstalling
a plugin changes the stamp and the entry is rebuilt by importing the plugin once;
editing ``llmos_tools`` itself (which builds the specs) empties the whole cache.

Not covered: a plugin whose registrations depend on anything but its code (an
environment variable, a config file, the network): such a plugin opts out with
``LLMOS_CACHE_TOOLS = False``. A cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from llmos_tools.abi import Effect, Tool

VERSION = 1


def llmos_home() -> Path:
    """``$LLMOS_HOME``, by default ``~/.local/share/llmos`` (the session store's home too)."""
    return Path(os.environ.get("LLMOS_HOME") or "~/.local/share/llmos").expanduser()


def stamp(ep: EntryPoint) -> str:
    """What must stay the same for a cached entry to stay valid (cheap: no import)."""
    dist = ep.dist
    parts = [ep.value, f"{dist.name}=={dist.version}" if dist is not None else "?"]
    top = ep.module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: finds, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return "|".join([*parts, "missing"])
    locations = list(spec.submodule_search_locations or [])
    files = [Path(spec.origin)] if not locations else _python_files(Path(locations[0]))
    newest = size = 0
    for path in files:
        try:
            info = path.stat()
        except OSError:
            continue
        newest, size = max(newest, info.st_mtime_ns), size + info.st_size
    return "|".join([*parts, str(newest), str(size), str(len(files))])


def abi_stamp() -> str:
    """This cache format and the llmos_tools code that builds specs: a change empties the cache."""
    files = _python_files(Path(__file__).parent)
    return f"{VERSION}|{max(p.stat().st_mtime_ns for p in files)}|{sum(p.stat().st_size for p in files)}"


def _python_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return found


def tool_to_spec(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "effects": sorted(str(e) for e in tool.effects),
        "wants_context": tool.wants_context,
    }


def tool_from_spec(spec: dict[str, Any], plugin: str) -> Tool:
    """A Tool with no function yet: the loader gives it a stand-in that imports the plugin."""
    return Tool(
        name=spec["name"],
        description=spec["description"],
        parameters=spec["parameters"],
        function=_unset,
        effects=frozenset(Effect(e) for e in spec["effects"]),
        wants_context=spec["wants_context"],
        plugin=plugin,
    )


def _unset(**kwargs: Any) -> Any:
    raise RuntimeError("a cached tool was called before its plugin was attached")


class SpecCache:
    """The cache file, read once, written back only when something changed."""

    def __init__(self, path: Path, entries: dict[str, Any]) -> None:
        self.path, self.entries, self.dirty = path, entries, False

    @classmethod
    def open(cls, path: Path | None = None) -> SpecCache:
        # one file per Python environment: two venvs sharing a home do not overwrite each other
        digest = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
        path = path or llmos_home() / "cache" / f"plugins-{digest}.json"
        try:
            data = json.loads(path.read_text())
            entries = data["plugins"] if data.get("abi") == abi_stamp() else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            entries = {}
        return cls(path, entries)

    def get(self, plugin: str, stamp: str) -> list[Tool] | None:
        entry = self.entries.get(plugin)
        if not isinstance(entry, dict) or entry.get("stamp") != stamp:
            return None
        try:
            return [tool_from_spec(spec, plugin) for spec in entry["tools"]]
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, plugin: str, stamp: str, tools: list[Tool]) -> None:
        self.entries[plugin] = {"stamp": stamp, "tools": [tool_to_spec(t) for t in tools]}
        self.dirty = True

    def drop(self, plugin: str) -> None:
        if self.entries.pop(plugin, None) is not None:
            self.dirty = True
            self.save()

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"abi": abi_stamp(), "plugins": self.entries}, indent=1))
            temporary.replace(self.path)  # atomic: a concurrent reader sees the old or the new file
            self.dirty = False
        except OSError:
            pass  # a read-only home only costs start-up time
