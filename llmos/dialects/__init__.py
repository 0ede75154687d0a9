"""Dialects: how a model family writes tool calls and reads results (see :mod:`llmos.dialects.base`)."""

from llmos.dialects.base import Call, CallSyntaxError, Dialect, Turn

__all__ = ["Call", "CallSyntaxError", "Dialect", "Turn", "get_dialect"]


def get_dialect(name: str, **options: object) -> Dialect:
    """A dialect by name: ``llmos``, ``smol`` (llmos in SmolLM2's control tokens), ``hermes`` (the
    model's chat template, Hermes ``<tool_call>``), ``openai`` (chat-completions messages, for
    servers) or ``generic``."""
    if name == "llmos":
        from llmos.dialects.llmos import LlmosDialect

        return LlmosDialect()
    if name == "smol":
        from llmos.dialects.smol import SmolDialect

        return SmolDialect()
    if name == "hermes":
        from llmos.dialects.hermes import HermesDialect

        return HermesDialect(**options)  # type: ignore[arg-type]
    if name == "openai":
        from llmos.dialects.openai import OpenAIDialect

        return OpenAIDialect()
    if name == "generic":
        from llmos.dialects.generic import GenericDialect

        return GenericDialect()
    raise ValueError(f"unknown dialect {name!r}; choose llmos, smol, hermes, openai or generic")
