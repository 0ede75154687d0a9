"""llmos: a local-first LLM operating system.

The model is the CPU (:mod:`llmos.cpu`), the context window is RAM, tools are apps
reached through system calls that the kernel (:mod:`llmos.kernel`) traps in the
token stream. Heavy modules load lazily, so ``import llmos`` stays fast.
"""

__version__ = "0.1.0"
