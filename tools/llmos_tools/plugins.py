"""Plugin discovery: pluggy hooks behind the ``llmos`` entry-point group.

A plugin is a module that implements the hook below and is named by an entry
point in the ``llmos`` group (``[project.entry-points.llmos]`` in its
``pyproject.toml``). The built-in apps take exactly this path.

    from llmos_tools import hookimpl, tool

    @hookimpl
    def register_tools(register):
        register(my_tool)

Contract: :func:`load_tools` never raises because of a plugin. A plugin that fails
to import, raises in its hook or registers a name already taken is skipped and
reported in :attr:`Registry.problems`, so one broken plugin cannot stop llmos.
``LLMOS_PLUGINS`` (comma-separated entry-point names) restricts which plugins load;
unset means all. Not covered: sandboxing plugin code, which runs in-process with
the user's rights like any Python package they install.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from llmos_tools.abi import Tool

ENTRY_POINT_GROUP = "llmos"
hookspec = pluggy.HookspecMarker("llmos")
hookimpl = pluggy.HookimplMarker("llmos")


class HookSpecs:
    @hookspec
    def register_tools(self, register: Callable[[Tool], None]) -> None:  # type: ignore[empty-body]
        """Call ``register(tool)`` once for each tool the plugin provides."""


@dataclass
class Registry:
    """The tools llmos can call, by name, and what went wrong while loading them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, tool: Tool, plugin: str = "") -> None:
        if not isinstance(tool, Tool):
            self.problems.append(f"plugin {plugin!r} registered {tool!r}, which is not a Tool")
            return
        if tool.name in self.tools:
            owner = self.tools[tool.name].plugin or "built-in"
            self.problems.append(f"plugin {plugin!r}: tool name {tool.name!r} already registered by {owner!r}; skipped")
            return
        tool.plugin = tool.plugin or plugin
        self.tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def names(self) -> list[str]:
        return sorted(self.tools)

    def only(self, names: Iterable[str] | None) -> Registry:
        """A registry restricted to ``names`` (``None`` keeps everything)."""
        if names is None:
            return self
        wanted = list(names)
        missing = [n for n in wanted if n not in self.tools]
        if missing:
            raise KeyError(f"unknown tool(s) {missing}; available: {self.names()}")
        return Registry({n: self.tools[n] for n in wanted}, list(self.problems))


def _allowed_plugins() -> set[str] | None:
    value = os.environ.get("LLMOS_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_tools(extra_plugins: Iterable[Any] = (), allow: set[str] | None = None) -> Registry:
    """Discover every plugin in the entry-point group and collect its tools.

    ``extra_plugins`` are modules or objects with hook implementations, registered
    directly (tests, embedding applications). ``allow`` overrides ``LLMOS_PLUGINS``.
    """
    allow = _allowed_plugins() if allow is None else allow
    registry = Registry()
    manager = pluggy.PluginManager("llmos")
    manager.add_hookspecs(HookSpecs)
    sources: list[tuple[str, Callable[[], Any]]] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allow is None or ep.name in allow:
            sources.append((ep.name, ep.load))
    for index, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", f"extra-{index}")
        sources.append((name, lambda plugin=plugin: plugin))
    for name, load in sources:
        try:
            module = load()
            manager.register(module, name=name)
            for impl in manager.hook.register_tools.get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=lambda t, name=name: registry.add(t, name))
        except Exception as exc:  # a broken plugin is reported, never fatal
            registry.problems.append(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}")
            if manager.has_plugin(name):
                manager.unregister(name=name)
    return registry
