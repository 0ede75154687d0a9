"""CPU backends: the model as a token machine with a KV cache (see :mod:`llmos.cpu.base`)."""

from llmos.cpu.base import CPU, ContextOverflow, Counters, CPUError, Piece, Sampling, Segment, TokenCPU

__all__ = ["CPU", "CPUError", "ContextOverflow", "Counters", "Piece", "Sampling", "Segment", "TokenCPU"]
