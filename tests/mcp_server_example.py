"""A small real MCP server for the test suite, written with the official ``mcp`` SDK.

    python tests/mcp_server_example.py                 # stdio
    python tests/mcp_server_example.py http PORT       # streamable HTTP on 127.0.0.1:PORT/mcp

Tools: ``add`` (two integers), ``shout`` (upper-cases text, which may carry an
injection attempt: the bridge must mark it untrusted) and ``fail`` (always an error).
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

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
    raise ValueError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
