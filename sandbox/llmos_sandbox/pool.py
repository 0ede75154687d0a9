"""A warm pool of started sandboxes, so a new session does not wait for a kernel.

Contract
--------
* ``SandboxPool(config, size)`` keeps up to ``size`` started, idle sandboxes (startup
  code already run). ``acquire(session_id)`` hands one over at once when the pool
  has one, else starts one in the caller's thread; either way a background thread
  then refills the pool. Each sandbox is used by one session only and is never
  returned: ``close`` it when the session ends (its folder and variables are private).
* ``sessions`` keeps one sandbox per session id: ``for_session(id)`` returns the same
  sandbox on every call, and ``end_session(id)`` closes it. ``close()`` closes all.
* The pool probes isolation once and fails closed at construction time, like a sandbox.

Not covered: sharing a kernel between sessions (never), limits across the pool (each
sandbox has its own cgroup).
"""

from __future__ import annotations

import threading

from llmos_sandbox.isolation import probe
from llmos_sandbox.kernel import Sandbox, SandboxConfig, effective_isolation


class SandboxPool:
    def __init__(self, config: SandboxConfig | None = None, size: int = 1) -> None:
        self.config = config or SandboxConfig()
        self.isolation = effective_isolation(self.config, probe())  # fail closed before anything starts
        self.size = size
        self.sessions: dict[str, Sandbox] = {}
        self.problems: list[str] = []  # refill failures, for the log
        self._ready: list[Sandbox] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._refill_forever, name="llmos-sandbox-pool", daemon=True)
        self._thread.start()
        self._wake.set()

    def acquire(self, session_id: str = "") -> Sandbox:
        """A started sandbox for one session, from the pool when one is ready."""
        with self._lock:
            sandbox = self._ready.pop() if self._ready else None
        self._wake.set()
        if sandbox is None or not sandbox.alive:
            if sandbox is not None:
                sandbox.close()
            sandbox = Sandbox(self.config, self.isolation)
        sandbox.session_id = session_id
        return sandbox

    def for_session(self, session_id: str) -> Sandbox:
        """The session's sandbox, acquired on first use."""
        with self._lock:
            sandbox = self.sessions.get(session_id)
        if sandbox is None or sandbox.closed:
            sandbox = self.acquire(session_id)
            with self._lock:
                self.sessions[session_id] = sandbox
        return sandbox

    def end_session(self, session_id: str) -> None:
        with self._lock:
            sandbox = self.sessions.pop(session_id, None)
        if sandbox is not None:
            sandbox.close()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the pool is full (tests, benchmarks, start-up warmers)."""
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            with self._lock:
                if len(self._ready) >= self.size:
                    return True
            deadline.wait(0.05)
        return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            doomed = self._ready + list(self.sessions.values())
            self._ready, self.sessions = [], {}
        self._wake.set()
        self._thread.join(timeout=30)
        for sandbox in doomed:
            sandbox.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refill_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if self._closed or len(self._ready) >= self.size:
                        break
                try:
                    sandbox = Sandbox(self.config, self.isolation)
                except Exception as exc:  # reported, and the pool serves cold starts instead
                    self.problems.append(f"{type(exc).__name__}: {exc}")
                    break
                with self._lock:
                    if self._closed:
                        sandbox.close()
                        return
                    self._ready.append(sandbox)
            with self._lock:
                if self._closed:
                    return
