"""Plugin discovery: pluggy hooks behind the ``llmos`` entry-point group, loaded lazily.

A plugin is a module that implements the hook below and is named by an entry
point in the ``llmos`` group (``[project.entry-points.llmos]`` in its
``pyproject.toml``). The built-in apps take exactly this path.

    from llmos_tools import hookimpl, tool

    @hookimpl
    def register_tools(register):
        register(my_tool)          # a Tool, or a Toolbox instance (all of its tools)

Contract
--------
* :func:`load_tools` never raises because of a plugin. A plugin that fails to
  import, raises in its hook or registers a name already taken is skipped and
  reported in :attr:`Registry.problems`, so one broken plugin cannot stop llmos.
* ``LLMOS_PLUGINS`` (comma-separated entry-point names) restricts which plugins
  load; a name written ``-name`` is denied instead (``LLMOS_PLUGINS=-python,-browser``
  loads all but those two). Unset means all.
* Lazy loading: what a plugin registered (names, descriptions, schemas, effects) is
  cached per entry point (:mod:`llmos_tools.cache`), so a warm start lists every
  tool without importing any plugin module; a plugin is imported the first time
  one of its tools runs. A plugin whose tool list depends on more than its code
  (configuration, the network) sets ``LLMOS_CACHE_TOOLS = False`` in its module and
  is imported at every start, as the MCP bridge does.

Not covered: sandboxing plugin code, which runs in-process with the user's rights
like any Python package they install.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

import pluggy

from llmos_tools import cache
from llmos_tools.abi import Tool
from llmos_tools.toolbox import Toolbox

ENTRY_POINT_GROUP = "llmos"
hookspec = pluggy.HookspecMarker("llmos")
hookimpl = pluggy.HookimplMarker("llmos")


class HookSpecs:
    @hookspec
    def register_tools(  # type: ignore[empty-body]
        self, register: Callable[[Tool | Toolbox], None], report: Callable[[str], None]
    ) -> None:
        """Call ``register(tool)`` once for each tool (or :class:`Toolbox`) the plugin provides.

        ``report(message)`` (optional: take the argument only if you need it) records a
        problem that is not fatal to the plugin, such as one of several servers failing.
        """


@dataclass
class Registry:
    """The tools llmos can call, by name, and what went wrong while loading them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, tool: Tool | Toolbox, plugin: str = "") -> None:
        if isinstance(tool, Toolbox):
            for member in tool.tools():
                self.add(member, plugin)
            return
        if not isinstance(tool, Tool):
            self.problems.append(f"plugin {plugin!r} registered {tool!r}, which is not a Tool")
            return
        if tool.method:
            message = f"plugin {plugin!r} registered the method {tool.name!r}; register an instance of its Toolbox"
            self.problems.append(message)
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


def plugin_filter(value: str | None) -> tuple[set[str] | None, set[str]]:
    """(allowed or None for all, denied) from an ``LLMOS_PLUGINS`` value."""
    if value is None:
        return None, set()
    names = [name.strip() for name in value.split(",") if name.strip()]
    denied = {name[1:] for name in names if name.startswith("-")}
    allowed = {name for name in names if not name.startswith("-")}
    return (allowed or (None if denied else set())), denied


def collect(plugin: Any, name: str) -> tuple[list[Tool | Toolbox], list[str]]:
    """Run one plugin's ``register_tools`` hook: (what it registered, what it reported). May raise."""
    manager = pluggy.PluginManager("llmos")
    manager.add_hookspecs(HookSpecs)
    manager.register(plugin, name=name)
    registered: list[Tool | Toolbox] = []
    reported: list[str] = []
    manager.hook.register_tools(register=registered.append, report=reported.append)
    return registered, reported


def load_tools(
    extra_plugins: Iterable[Any] = (),
    allow: set[str] | None = None,
    deny: Iterable[str] = (),
    use_cache: bool | None = None,
) -> Registry:
    """Discover every plugin in the entry-point group and collect its tools.

    ``extra_plugins`` are modules or objects with hook implementations, registered
    directly (tests, embedding applications) and never cached. ``allow`` and
    ``deny`` override ``LLMOS_PLUGINS``. ``use_cache`` defaults to on unless
    ``LLMOS_PLUGIN_CACHE=0``.
    """
    env_allow, env_deny = plugin_filter(os.environ.get("LLMOS_PLUGINS"))
    allow = env_allow if allow is None else allow
    denied = set(deny) or env_deny
    if use_cache is None:
        use_cache = os.environ.get("LLMOS_PLUGIN_CACHE", "1") != "0"
    registry = Registry()
    points = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if _wanted(ep.name, allow, denied)]
    store = cache.SpecCache.open() if use_cache else None
    for ep in sorted(points, key=lambda e: e.name):
        _load_entry_point(ep, registry, store)
    for index, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", f"extra-{index}")
        _load_plugin(name, functools.partial(_identity, plugin), registry)
    if store is not None:
        store.save()
    return registry


def _identity(value: Any) -> Any:
    return value


def _wanted(name: str, allow: set[str] | None, denied: set[str]) -> bool:
    return name not in denied and (allow is None or name in allow)


def _load_entry_point(ep: EntryPoint, registry: Registry, store: cache.SpecCache | None) -> None:
    stamp = cache.stamp(ep) if store is not None else ""
    cached = store.get(ep.name, stamp) if store is not None else None
    if store is not None and cached is not None:
        for tool in cached:
            tool.function = _LazyFunction(ep, tool, store)
            registry.add(tool, ep.name)
        return
    before, problems = set(registry.tools), len(registry.problems)
    module = _load_plugin(ep.name, ep.load, registry)
    clean = module is not None and len(registry.problems) == problems  # problems are reported again next time
    if store is not None and clean and getattr(module, "LLMOS_CACHE_TOOLS", True):
        store.put(ep.name, stamp, [tool for name, tool in registry.tools.items() if name not in before])


def _load_plugin(name: str, load: Callable[[], Any], registry: Registry) -> Any:
    """Import and run one plugin into ``registry``; report (never raise) what goes wrong."""
    try:
        module = load()
        registered, reported = collect(module, name)
    except Exception as exc:  # a broken plugin is reported, never fatal
        registry.problems.append(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}")
        return None
    registry.problems += [f"plugin {name!r}: {message}" for message in reported]
    for item in registered:
        registry.add(item, name)
    return module


class _LazyFunction:
    """Stands in for a cached tool's function: imports the plugin on the first call.

    The plugin's hook runs then (once per process); the real tool with the same name
    replaces the stand-in. A plugin that no longer provides the tool, or whose tool now
    declares effects the cache did not (the policy decided on the cached ones), raises:
    the kernel reports a failed call, and the stale entry is dropped.
    """

    _loaded: ClassVar[dict[str, dict[str, Tool]]] = {}  # entry-point name -> its real tools, per process

    def __init__(self, ep: EntryPoint, cached: Tool, store: cache.SpecCache) -> None:
        self.ep, self.tool_name, self.effects, self.store = ep, cached.name, cached.effects, store

    def resolve(self) -> Tool:
        tools = self._loaded.get(self.ep.name)
        if tools is None:
            fresh = Registry()
            _load_plugin(self.ep.name, self.ep.load, fresh)
            if fresh.problems:
                self.store.drop(self.ep.name)
                raise RuntimeError("; ".join(fresh.problems))
            tools = self._loaded[self.ep.name] = fresh.tools
        real = tools.get(self.tool_name)
        if real is None:
            self.store.drop(self.ep.name)
            raise RuntimeError(f"plugin {self.ep.name!r} no longer provides {self.tool_name!r}; restart llmos")
        if not real.effects <= self.effects:  # the policy judged the call on the cached effects: never widen
            self.store.drop(self.ep.name)
            raise RuntimeError(f"{self.tool_name!r} now declares more effects than when it was checked; restart llmos")
        return real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve().function(*args, **kwargs)
