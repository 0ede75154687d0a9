"""A small real MCP server for the test suite, written with the official ``mcp`` SDK.

    python tests/mcp_server_example.py                 # stdio
    python tests/mcp_server_example.py http PORT       # streamable HTTP on 127.0.0.1:PORT/mcp

Tools: ``add`` (two integers), ``shout`` (upper-cases text, which may carry an
injection attempt: the bridge must mark it untrusted), ``fail`` (always an error)
and ``slow`` (sleeps, for timeouts).
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("example")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@server.tool()
def fail(reason: str = "no reason") -> str:
    """Always fails."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer (for timeouts)."""
    await anyio.sleep(seconds)
    return "awake"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
