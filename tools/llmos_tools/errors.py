"""The tool ABI's error: its own module, so the ABI and the schema validator both import it (no circle)."""

from llmos_errors import LlmosError


class ToolError(LlmosError):
    """A mistake the model can fix: becomes a result the model reads, never a crash."""
