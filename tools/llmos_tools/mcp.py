"""The MCP bridge: every tool of a Model Context Protocol server becomes an llmos tool.

Configuration is the ``mcpServers`` table other MCP clients use, in JSON, read from
``$LLMOS_MCP_CONFIG`` or ``$LLMOS_HOME/mcp.json`` (``LLMOS_HOME`` defaults to
``~/.local/share/llmos``)::

    {"mcpServers": {
      "files":  {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                 "env": {"DEBUG": "0"}, "effects": ["writes"],
                 "tools": {"read_file": {"effects": []}}},
      "search": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer …"},
                 "effects": ["network"], "prefix": "web_", "timeout": 30}
    }}

A server has a ``command`` (stdio; with ``args``, ``env``, ``cwd``) or a ``url``
(streamable HTTP). Its tools are named ``prefix + tool name`` (the prefix defaults
to ``<server>_``). Optional: ``effects`` (default: the most cautious, network +
writes + sends_out), per-tool ``effects`` under ``tools``, ``timeout`` (seconds per
call, default 60), ``startup_timeout`` (default 30), ``enabled`` (default true).

Contract
--------
* Effects come from this configuration only. A server's own annotations
  (``readOnlyHint``…) are claims by the server, which the policy does not trust.
* Every result is untrusted: ``ToolResult(trust=UNTRUSTED, source="mcp:<server>/<tool>")``.
  A server error, a timeout or a dead server is an error result, never an exception.
* The ``mcp`` SDK is async and llmos tools are sync: all sessions live on one
  background event-loop thread; each call waits at most its timeout. A session
  that died is restarted once on the next call.
* A server that fails to start is reported (``llmos tools`` lists the problem) and
  skipped; the other servers and plugins load. The ``mcp`` package is imported only
  when a server is configured. Server stderr goes to ``$LLMOS_HOME/logs/mcp-<server>.log``.

Not covered: MCP resources, prompts, sampling and elicitation (a server that asks
for them gets the SDK's default refusal); OAuth (pass a token in ``headers``); the
server's list-changed notifications (tools are listed once, at start).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llmos_errors import LlmosError

from llmos_tools.abi import Artifact, Effect, Tool, ToolResult, Trust
from llmos_tools.cache import llmos_home
from llmos_tools.plugins import hookimpl

LLMOS_CACHE_TOOLS = False  # the tool list depends on the configuration and the servers, not on this code
CAUTIOUS: frozenset[Effect] = frozenset({Effect.NETWORK, Effect.WRITES, Effect.SENDS_OUT})
T = TypeVar("T")


class MCPConfigError(LlmosError, ValueError):
    """The configuration file is not what the module docstring describes."""


@dataclass(frozen=True)
class MCPServerConfig:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    effects: frozenset[Effect] = CAUTIOUS
    tool_effects: Mapping[str, frozenset[Effect]] = field(default_factory=dict)
    prefix: str | None = None
    timeout: float = 60.0
    startup_timeout: float = 30.0
    enabled: bool = True

    def tool_name(self, remote: str) -> str:
        prefix = f"{self.name}_" if self.prefix is None else self.prefix
        return re.sub(r"[^A-Za-z0-9_-]", "_", prefix + remote)[:64]  # what function-calling APIs accept


def parse_config(data: Any) -> list[MCPServerConfig]:
    """Servers from a parsed ``{"mcpServers": {...}}`` document. Raises :class:`MCPConfigError`."""
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise MCPConfigError('expected {"mcpServers": {"<name>": {...}}}')
    return [_server(name, entry) for name, entry in data.get("mcpServers", {}).items()]


def _server(name: str, entry: Any) -> MCPServerConfig:
    if not isinstance(entry, dict) or ("command" in entry) == ("url" in entry):
        raise MCPConfigError(f"server {name!r}: give exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
    try:
        tools = entry.get("tools", {})
        return MCPServerConfig(
            name=name,
            command=entry.get("command"),
            args=tuple(str(a) for a in entry.get("args", ())),
            env={str(k): str(v) for k, v in entry.get("env", {}).items()},
            cwd=entry.get("cwd"),
            url=entry.get("url"),
            headers={str(k): str(v) for k, v in entry.get("headers", {}).items()},
            effects=_effects(entry["effects"]) if "effects" in entry else CAUTIOUS,
            tool_effects={tool: _effects(spec["effects"]) for tool, spec in tools.items() if "effects" in spec},
            prefix=entry.get("prefix"),
            timeout=float(entry.get("timeout", 60.0)),
            startup_timeout=float(entry.get("startup_timeout", 30.0)),
            enabled=bool(entry.get("enabled", True)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise MCPConfigError(f"server {name!r}: {exc}") from exc


def _effects(values: Iterable[str]) -> frozenset[Effect]:
    return frozenset(Effect(v) for v in values)


def config_path() -> Path:
    return Path(os.environ.get("LLMOS_MCP_CONFIG") or llmos_home() / "mcp.json").expanduser()


def load_config(path: str | Path | None = None) -> list[MCPServerConfig]:
    """The configured servers; none when the file does not exist."""
    path = Path(path) if path else config_path()
    if not path.exists():
        return []
    try:
        return parse_config(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise MCPConfigError(f"{path}: not valid JSON: {exc}") from exc


# ---------------------------------------------------------------- the event-loop thread
class _LoopThread:
    """One asyncio loop on a daemon thread, shared by every MCP session in the process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="llmos-mcp", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_loop: _LoopThread | None = None
_loop_lock = threading.Lock()


def _background() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _LoopThread()
        return _loop


# ---------------------------------------------------------------- one server
class MCPConnection:
    """A live session with one server. Thread-safe: calls from any thread run on the loop thread."""

    def __init__(self, config: MCPServerConfig) -> None:
        self.config = config
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock = threading.Lock()

    # The client must be entered and exited in one task (anyio cancel scopes), so a task
    # owns it for its whole life and calls borrow it from other tasks on the same loop.
    async def _serve(self, ready: asyncio.Future[None]) -> None:
        self._stop = asyncio.Event()
        try:
            async with _client(self.config) as client:
                self._client = client
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(_root_cause(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._client = None

    async def _start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._serve(ready))
        await ready

    def start(self) -> None:
        """Start the server and open a session; raises what went wrong (with its cause)."""
        with self._lock:
            if self._client is not None:
                return
            try:
                _background().run(self._start(), self.config.startup_timeout)
            except TimeoutError:
                self.close()
                raise TimeoutError(f"no session within {self.config.startup_timeout:.0f} s") from None

    def list_tools(self) -> list[Any]:
        self.start()
        return _background().run(self._list_tools(), self.config.startup_timeout)  # listing is part of starting

    async def _list_tools(self) -> list[Any]:
        tools, cursor = [], None
        while True:
            page = await self._client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """The raw ``CallToolResult``; restarts a session that died once."""
        if self._task is None or self._task.done():
            self._client = None
        self.start()
        return _background().run(self._client.call_tool(name, arguments), self.config.timeout)

    def close(self) -> None:
        task, stop = self._task, self._stop
        if task is None or stop is None or task.done():
            return
        loop = _background().loop
        loop.call_soon_threadsafe(stop.set)
        with contextlib.suppress(Exception):  # a stuck server: the daemon thread ends with the process
            asyncio.run_coroutine_threadsafe(asyncio.wait({task}, timeout=5), loop).result(6)


def _client(config: MCPServerConfig) -> Any:
    from mcp import Client, StdioServerParameters  # the SDK is heavy: imported only when a server is used

    if config.url:
        from mcp.client.streamable_http import streamable_http_client

        http = None
        if config.headers:
            import httpx2  # the SDK's HTTP client

            http = httpx2.AsyncClient(headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=300.0))
        return Client(streamable_http_client(config.url, http_client=http), read_timeout_seconds=config.timeout)
    from mcp.client.stdio import stdio_client

    parameters = StdioServerParameters(
        command=config.command or "", args=list(config.args), env=dict(config.env) or None, cwd=config.cwd
    )
    return Client(stdio_client(parameters, errlog=_server_log(config.name)), read_timeout_seconds=config.timeout)


def _server_log(name: str) -> Any:
    folder = llmos_home() / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / f"mcp-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log", "a")
    except OSError:
        return open(os.devnull, "w")


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap the real error)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# ---------------------------------------------------------------- tools
def mcp_tools(connection: MCPConnection) -> list[Tool]:
    """Start the server, list its tools and wrap each one as a :class:`Tool`."""
    config = connection.config
    tools = []
    for remote in connection.list_tools():
        parameters = dict(remote.input_schema or {})
        parameters.setdefault("type", "object")
        tools.append(
            Tool(
                name=config.tool_name(remote.name),
                description=(remote.description or remote.title or remote.name).strip(),
                parameters=parameters,
                function=_RemoteCall(connection, remote.name),
                effects=config.tool_effects.get(remote.name, config.effects),
                plugin=f"mcp:{config.name}",
            )
        )
    return tools


class _RemoteCall:
    """The function of one MCP tool: forwards the validated arguments, wraps the answer."""

    def __init__(self, connection: MCPConnection, remote: str) -> None:
        self.connection, self.remote = connection, remote
        self.source = f"mcp:{connection.config.name}/{remote}"

    def __call__(self, **arguments: Any) -> ToolResult:
        try:
            result = self.connection.call(self.remote, arguments)
        except TimeoutError:
            return self._error(f"the MCP server did not answer within {self.connection.config.timeout:.0f} s")
        except Exception as exc:
            return self._error(f"the MCP server failed: {type(_root_cause(exc)).__name__}: {_root_cause(exc)}")
        text, artifacts = _content(result.content, self.remote)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        text = f"error: {text}" if result.is_error else text
        return ToolResult(
            text, Trust.UNTRUSTED, self.source, artifacts, bool(result.is_error), data=result.structured_content
        )

    def _error(self, message: str) -> ToolResult:
        return ToolResult(f"error: {message}", Trust.UNTRUSTED, self.source, is_error=True)


def _content(blocks: Iterable[Any], remote: str) -> tuple[str, list[Artifact]]:
    """Text the model reads, and files for images and audio (which it cannot)."""
    parts: list[str] = []
    artifacts: list[Artifact] = []
    for block in blocks:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            extension = block.mime_type.split("/")[-1].split("+")[0] or "bin"
            handle, name = tempfile.mkstemp(prefix=f"mcp-{remote}-", suffix=f".{extension}")
            with os.fdopen(handle, "wb") as file:
                file.write(base64.b64decode(block.data))
            artifacts.append(Artifact(Path(name), block.mime_type, f"{kind} from MCP tool {remote}"))
            parts.append(f"[{kind} {block.mime_type} attached]")
        elif kind == "resource":
            parts.append(getattr(block.resource, "text", None) or f"[resource {block.resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
    return "\n".join(parts), artifacts


# ---------------------------------------------------------------- the plugin
_connections: dict[str, MCPConnection] = {}  # repr(config) -> its session: one per server per process


def connect(configs: Iterable[MCPServerConfig]) -> tuple[list[Tool], list[str]]:
    """Tools of every enabled server, and one problem line per server that failed.

    Servers start in parallel; a server already started in this process with the same
    configuration is reused.
    """
    pending = [_connections.get(repr(c)) or MCPConnection(c) for c in configs if c.enabled]
    results: list[list[Tool] | BaseException] = [[] for _ in pending]
    threads = [threading.Thread(target=_list_into, args=(c, results, i)) for i, c in enumerate(pending)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded: each start and listing has its own timeout
    tools: list[Tool] = []
    problems: list[str] = []
    for connection, outcome in zip(pending, results, strict=True):
        name = connection.config.name
        if isinstance(outcome, BaseException):
            problems.append(f"MCP server {name!r} failed to start: {type(outcome).__name__}: {outcome}")
            connection.close()
        else:
            _connections[repr(connection.config)] = connection
            tools += outcome
    return tools, problems


def _list_into(connection: MCPConnection, results: list[Any], index: int) -> None:
    try:
        results[index] = mcp_tools(connection)
    except Exception as exc:
        results[index] = _root_cause(exc)


def close_all() -> None:
    """End every session (and stop every stdio server) this process started."""
    for connection in list(_connections.values()):
        connection.close()
    _connections.clear()


atexit.register(close_all)


@hookimpl
def register_tools(register: Callable[[Tool], None], report: Callable[[str], None]) -> None:
    """The configured servers' tools; a broken config or server is reported, not fatal."""
    try:
        configs = load_config()
    except MCPConfigError as exc:
        report(f"MCP configuration {config_path()}: {exc}")
        return
    tools, problems = connect(configs)
    for problem in problems:
        report(problem)
    for each in tools:
        register(each)
