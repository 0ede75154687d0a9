"""The tool ABI's error: its own module, so the ABI and the schema validator both import it (no circle)."""


class ToolError(Exception):
    """A mistake the model can fix: becomes a result the model reads, never a crash."""
