"""One thread per process runs every llama.cpp computation.

llama.cpp's CPU backend, built with OpenMP (``OPENMP = 1`` in its system info, llama-cpp-python's
default), runs each ``llama_decode`` as an OpenMP parallel region of the *calling* thread, and
libgomp keeps one worker team per thread that ever started a region. Once the process holds more
of those workers than the machine has cores (two threads that decoded, ``n_threads`` = cores
each), libgomp throttles spinning at its barriers to about 100 spins before sleeping on a futex,
and llama.cpp crosses a barrier after every operation of the graph. Measured on the 2-core
machine (SmolLM2-135M, Q8_0, one session, stop 43): a plain CPU in the main thread decoded 117
tokens/s, and 86 once a :class:`~llmos.cpu.batch.BatchEngine` had decoded in its own thread; with
every decode on this module's thread, 113 both before and after the engine. Any two threads that
decode meet the same throttle (measured: the engine's and a plain CPU's).

So :func:`decode` hands ``llama_decode`` to one long-lived thread, and the process has one team.

Contract
--------
* Every ``llama_decode`` in llmos goes through :func:`decode`; calls from several threads run one
  at a time, in the order they arrive (llama.cpp would share the same cores anyway, and two
  spinning teams at once are slower than either alone).
* A call from the compute thread itself runs directly (no hand-off, no deadlock).
* An exception inside the call is raised in the caller. A caller interrupted while it waits
  (KeyboardInterrupt) raises once the call is over, never while the call still reads its
  arguments, as before this module. The thread starts on first use; at exit
  Python waits for the call in flight, never for a queue (each caller waits for its own call).
* A forked child starts a thread of its own on first use (the parent's does not survive a fork).
* Cost: one hand-off per call (tens of microseconds against milliseconds per decode).

Not covered: other llama.cpp entry points that compute (embeddings, ``llama_encode``: llmos does
not call them); builds without OpenMP, which need none of this and pay only the hand-off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_thread_ident: int | None = None


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the compute thread; its result, or its exception raised here."""
    if threading.get_ident() == _thread_ident:
        return fn(*args)
    future = _pool().submit(fn, *args)
    try:
        return future.result()
    except BaseException:
        # interrupted while waiting (Ctrl-C): the call goes on with the caller's buffers (a llama_batch),
        # so the caller hears of it only once the call is over, as when it ran in the caller's thread
        wait([future])
        raise


def decode(lib: Any, ctx: Any, batch: Any) -> int:
    """``lib.llama_decode(ctx, batch)`` on the compute thread; llama.cpp's status code."""
    return run(lib.llama_decode, ctx, batch)


def compute_thread_ident() -> int | None:
    """The compute thread's identifier, None before the first call (tests check where decodes ran)."""
    return _thread_ident


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-llama")
            _executor.submit(_remember_thread).result()
        return _executor


def _remember_thread() -> None:
    global _thread_ident
    _thread_ident = threading.get_ident()


def _forget_in_child() -> None:
    global _executor, _thread_ident, _lock
    _executor, _thread_ident, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
