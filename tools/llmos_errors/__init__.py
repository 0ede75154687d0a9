"""llmos_errors: the root of every error llmos and its packages raise.

A leaf with no imports, so every package (the runtime, the tool ABI, memory, the sandbox, the
apps) can derive from it at no cost. Each error keeps the builtin it always was as a mixin
(``CPUError`` is still a ``RuntimeError``, ``TaskError`` a ``ValueError``), so existing
``except`` clauses keep working; ``except LlmosError`` catches all of them. The message says
what went wrong and what to do; the command line prints it as one line (``llmos: …``).
"""

__all__ = ["LlmosError"]


class LlmosError(Exception):
    """Something llmos or one of its packages could not do; the message says what and why."""
