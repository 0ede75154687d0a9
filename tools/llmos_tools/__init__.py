"""llmos_tools: the ABI between llmos and its apps. A leaf package: it never imports ``llmos``.

Front door::

    from llmos_tools import tool, Toolbox, Effect, ToolResult, ToolError, hookimpl

MCP servers become tools through :mod:`llmos_tools.mcp` (needs the ``mcp`` package).
"""

from llmos_tools.abi import READ_ONLY, Artifact, Effect, StoredPage, Tool, ToolContext, ToolResult, Trust
from llmos_tools.decorator import make_tool, tool
from llmos_tools.errors import ToolError
from llmos_tools.plugins import ENTRY_POINT_GROUP, Registry, hookimpl, hookspec, load_tools
from llmos_tools.schema import validate_arguments
from llmos_tools.toolbox import Toolbox

__all__ = [
    "ENTRY_POINT_GROUP",
    "READ_ONLY",
    "Artifact",
    "Effect",
    "Registry",
    "StoredPage",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Toolbox",
    "Trust",
    "hookimpl",
    "hookspec",
    "load_tools",
    "make_tool",
    "tool",
    "validate_arguments",
]
