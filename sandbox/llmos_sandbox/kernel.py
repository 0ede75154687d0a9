"""One persistent, isolated Jupyter kernel per session: :class:`Sandbox`.

Contract
--------
* ``Sandbox(config).run(code, timeout)`` executes a cell in a kernel that keeps its
  variables between calls and returns a :class:`CellResult`: stdout, stderr, rich
  outputs (mime bundles: ``text/plain``, ``image/png`` in base64, ``text/html``),
  the error with its traceback, and flags: ``timed_out``, ``memory_exceeded``,
  ``killed``, ``restarted``, ``output_truncated``. ``run`` never raises for
  anything the code does; it raises :class:`SandboxError` only when a kernel
  cannot be started at all (and :class:`IsolationError` when the host gives less
  isolation than the configuration requires: fail closed).
* Isolation follows the probe (:mod:`llmos_sandbox.isolation`): what the host gives
  is applied, what it lacks is named in ``isolation.missing``; ``strict`` refuses to
  start unless every layer is there. Reads are confined to the interpreter, the
  system's libraries, the sandbox's folders and ``read_paths`` (files the user hands
  the kernel, read-only); when we are root the kernel runs as ``nobody``; the session
  folder is a tmpfs of ``disk_bytes`` and ``disk_files`` (a full folder is an ``OSError``
  in the cell, with a note saying the quota was reached).
* Always on: a separate process group (and pid namespace where allowed), an
  environment built from scratch (nothing of the parent's leaks in), a private
  working folder, resource limits, IPC transport in a private 0700 folder, JSON
  messages only (nothing is ever unpickled from the kernel), output caps (a flood
  is cut, the rest kept under ``.output/`` in the working folder, the cell
  interrupted past ``max_output_bytes``), child processes that do not outlive
  their cell.
* Timeouts escalate: SIGINT (state kept), then after ``interrupt_grace`` the whole
  sandbox is killed and a fresh kernel started (``restarted``: state lost). A kernel
  that dies by itself is restarted the same way, and the result says so.

Not covered: the warm pool (:mod:`llmos_sandbox.pool`), figures as files (the python
app asks the kernel for them), stdin (``input()`` fails in the kernel).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import zmq
from jupyter_client.session import Session
from llmos_errors import LlmosError

from llmos_sandbox.filesystem import mount_quota, read_allowlist, unmount
from llmos_sandbox.isolation import (
    CLONE_NEWNET,
    Isolation,
    IsolationError,
    cgroup_create,
    cgroup_kill,
    cgroup_remove,
    probe,
    want_namespaces,
    want_user,
)
from llmos_sandbox.outputs import Capture, CellResult, KernelError
from llmos_sandbox.procfs import children, describe_exit, is_zombie, log_tail, user_process_count

# Run in every kernel after start. ipykernel buffers a cell's prints without bound before it
# sends them, so a flood must be stopped inside the kernel; the client's byte count is the backstop.
_PRELUDE = """
def _llmos_cap_output(limit):
    import sys
    class OutputLimitExceeded(BaseException):
        pass
    state = {"chars": 0, "tripped": False}
    def reset(*_):
        state.update(chars=0, tripped=False)
    get_ipython().events.register("pre_run_cell", reset)
    class CappedStream(type(sys.stdout)):
        # ``write`` is a data descriptor whose setter ignores assignments: IPython swaps
        # ``stream.write`` around every cell (and keeps every byte in memory for its history).
        def _capped_write(self, text):
            if state["tripped"]:
                return len(text)
            state["chars"] += len(text)
            if state["chars"] > limit:
                state["tripped"] = True
                raise OutputLimitExceeded(f"the cell printed over {limit:,} characters; it was stopped")
            return super().write(text)
        write = property(lambda self: self._capped_write, lambda self, value: None)
    for stream in (sys.stdout, sys.stderr):
        if type(stream) is CappedStream.__base__:
            stream.__class__ = CappedStream
_llmos_cap_output(%d)
del _llmos_cap_output
"""
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_counter = itertools.count(1)


class SandboxError(LlmosError, RuntimeError):
    """A kernel could not be started or used (not the code's fault)."""


@dataclass(frozen=True)
class Limits:
    """Per-kernel resource limits. ``processes`` bounds the whole sandbox (cgroup) where possible."""

    cpu_seconds: int = 900  # CPU time over the kernel's life; past it the kernel is killed and restarted
    memory_bytes: int = 3 * 2**30  # address space per process: a bomb gets MemoryError
    file_size_bytes: int = 256 * 2**20  # largest file a kernel may write
    processes: int = 64
    open_files: int = 512
    disk_bytes: int = 2**30  # the session folder's quota (tmpfs size), where the host gives one
    disk_files: int = 20_000  # ... and its inode limit: files and folders together


@dataclass(frozen=True)
class SandboxConfig:
    """How a sandbox runs. ``require`` fails closed; ``prefer`` takes what the host gives."""

    limits: Limits = Limits()
    timeout: float = 30.0  # default wall-clock seconds per cell
    interrupt_grace: float = 2.0  # after SIGINT, how long before the sandbox is killed
    start_timeout: float = 60.0
    max_output_chars: int = 20_000  # per stream, kept in the result
    max_output_bytes: int = 32 * 2**20  # per cell, everything: past it the cell is interrupted
    max_rich_outputs: int = 50
    network: Literal["require", "prefer", "allow"] = "prefer"
    confine_writes: Literal["require", "prefer", "off"] = "prefer"
    confine_reads: Literal["require", "prefer", "off"] = "prefer"  # needs write confinement (one ruleset)
    strict: bool = False  # refuse to start unless every isolation layer is there
    read_paths: tuple[str, ...] = ()  # files and folders the user hands the kernel (read-only)
    startup_code: str = ""  # run once after each (re)start, e.g. imports
    python: str = sys.executable
    root: str | None = None  # parent folder for session folders (default: the temp folder)
    env: tuple[tuple[str, str], ...] = ()  # extra variables for the kernel (nothing is inherited)


class Sandbox:
    """A persistent isolated kernel with a private working folder (``workdir``)."""

    def __init__(self, config: SandboxConfig | None = None, isolation: Isolation | None = None) -> None:
        self.config = config or SandboxConfig()
        self.isolation = effective_isolation(self.config, isolation or probe())
        missing = [path for path in self.config.read_paths if not os.path.exists(path)]
        if missing:
            raise SandboxError(f"read_paths: no such file or folder: {', '.join(missing)}")
        self.session_id = ""
        self.root = Path(tempfile.mkdtemp(prefix="llmos-sbx-", dir=self.config.root))
        self.root.chmod(0o700)
        self.workdir, self.home, self.rundir = self.root / "work", self.root / "home", self.root / "run"
        self._owner = want_user() if self.isolation.user else None
        self._quota = False
        self._cgroup = None
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._process: subprocess.Popen[bytes] | None = None
        self._sockets: list[zmq.Socket[bytes]] = []
        self._cells = 0
        self.closed = False
        try:
            self._make_folders()
            if "cgroup_pids" in self.isolation.mechanisms:
                self._cgroup = cgroup_create(f"llmos-{os.getpid()}-{next(_counter)}", self.config.limits.processes)
            self._start()
        except BaseException:
            self.close()
            raise

    def _make_folders(self) -> None:
        """The session folder (a tmpfs with the quota, where the host gives one), owned by the kernel's uid."""
        owner = self._owner or {"uid": os.getuid(), "gid": os.getgid()}
        if self.isolation.quota:
            limits = self.config.limits
            try:
                mount_quota(self.root, limits.disk_bytes, limits.disk_files, owner["uid"], owner["gid"])
            except OSError as exc:
                raise IsolationError(f"the disk quota could not be mounted: {exc}") from exc
            self._quota = True
        for folder in (self.workdir, self.home, self.home / "tmp", self.rundir):
            folder.mkdir(mode=0o700)
            os.chown(folder, owner["uid"], owner["gid"])
        os.chown(self.root, owner["uid"], owner["gid"])

    # --- public --------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def run(self, code: str, timeout: float | None = None) -> CellResult:
        """Execute ``code`` in the kernel; contained, whatever it does."""
        if self.closed:
            raise SandboxError("this sandbox is closed")
        notes = []
        if not self.alive:
            notes.append("the kernel had died since the last call; it was restarted and its variables are lost")
            self.restart()
        started = time.monotonic()
        self._cells += 1
        capture = Capture(self.config, self.workdir / ".output", self._cells)
        result = self._execute(code, timeout or self.config.timeout, capture)
        result.notes[:0] = notes
        result.restarted = result.restarted or bool(notes)
        limits = self.config.limits
        if result.error and result.error.name == "MemoryError":
            result.memory_exceeded = True
            result.notes.append(f"the cell ran out of memory (limit {limits.memory_bytes // 2**20} MiB)")
        if result.error and "[Errno 28]" in result.error.value and self._quota:
            result.notes.append(
                f"the sandbox's folder is full (quota: {limits.disk_files:,} files and folders, "
                f"{limits.disk_bytes // 2**20} MiB); delete files to go on"
            )
        if self.alive and not result.restarted:
            killed = self._kill_strays()
            if killed:
                result.notes.append(f"{killed} child process(es) the cell left running were killed")
        result.duration_s = time.monotonic() - started
        return result

    def interrupt(self) -> None:
        if self._kernel_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._kernel_pid, signal.SIGINT)

    def restart(self) -> None:
        """Kill everything in the sandbox and start a fresh kernel (files stay, variables go)."""
        self._stop()
        self._start()

    def close(self) -> None:
        """Kill the kernel and delete the session folder. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._stop()
        if self._cgroup:
            cgroup_remove(self._cgroup)
        if self._quota:
            with contextlib.suppress(OSError):
                unmount(self.root)  # the files go with the tmpfs
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one cell ------------------------------------------------------------------------

    def _execute(self, code: str, timeout: float, capture: Capture) -> CellResult:
        result = capture.result
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        message = self._session.msg("execute_request", {**content, "allow_stdin": False, "stop_on_error": True})
        msg_id = message["header"]["msg_id"]
        self._session.send(self._shell, message)
        deadline = time.monotonic() + timeout
        interrupted = False
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            now = time.monotonic()
            if now >= deadline or (capture.over_limit and not interrupted):
                if interrupted:  # SIGINT was not enough: take the whole sandbox down
                    self._kill_and_restart(result, "did not stop after an interrupt")
                    break
                if capture.over_limit:
                    result.notes.append(f"the cell printed over {self.config.max_output_bytes:,} bytes; interrupted")
                else:
                    result.timed_out = True
                    result.notes.append(f"the cell ran past its {timeout:g} s timeout; interrupted")
                self.interrupt()
                interrupted = True
                deadline = now + self.config.interrupt_grace
                continue
            events = dict(self._poller.poll(int(min(deadline - now, 0.25) * 1000) + 1))
            if not events:
                if not self.alive:
                    self._kill_and_restart(result, f"died ({describe_exit(self._process)})")
                    break
                continue
            if self._iopub in events:
                idle = self._drain_iopub(msg_id, capture) or idle
            if self._shell in events:
                reply = self._drain_shell(msg_id) or reply
        if reply is not None:
            result.execution_count = reply["content"].get("execution_count")
        return capture.finish()

    def _drain_iopub(self, msg_id: str, capture: Capture) -> bool:
        idle = False
        while True:
            _, message = self._session.recv(self._iopub, mode=zmq.NOBLOCK)
            if message is None:
                return idle
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                capture.stream(content.get("name", "stdout"), content.get("text", ""))
            elif kind in ("execute_result", "display_data", "update_display_data"):
                capture.rich("display_data" if kind == "update_display_data" else kind, content.get("data", {}))
            elif kind == "error":
                traceback = [_ANSI.sub("", line) for line in content.get("traceback", [])]
                capture.result.error = KernelError(content.get("ename", ""), content.get("evalue", ""), traceback)
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True

    def _drain_shell(self, msg_id: str) -> dict[str, Any] | None:
        found = None
        while True:
            _, message = self._session.recv(self._shell, mode=zmq.NOBLOCK)
            if message is None:
                return found
            if message["parent_header"].get("msg_id") == msg_id:
                found = message

    def _kill_and_restart(self, result: CellResult, why: str) -> None:
        result.killed = True
        self._stop()
        self._start()
        result.restarted = True
        result.notes.append(f"the kernel {why}; a fresh kernel was started: all variables are lost (files are kept)")

    # --- processes -----------------------------------------------------------------------

    def _kill_strays(self) -> int:
        """Kill processes the cell left behind (children of the kernel, orphans adopted by init)."""
        killed = 0
        for _ in range(20):
            strays = [p for p in children(self._init_pid) if p != self._kernel_pid] + children(self._kernel_pid)
            strays = [p for p in strays if not is_zombie(p)]
            if not strays:
                return killed
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.01)  # let them die, so their children are re-parented to init
        self._stop()  # a tree that keeps growing: start over
        self._start()
        return killed

    # --- start and stop ------------------------------------------------------------------

    def _start(self) -> None:
        key = secrets.token_hex(32)
        for stale in self.rundir.iterdir():
            stale.unlink()
        connection = {
            "transport": "ipc",
            "ip": str(self.rundir / "k"),
            **{f"{name}_port": port for port, name in enumerate(["shell", "iopub", "stdin", "control", "hb"], 1)},
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "llmos",
        }
        connection_file = self.rundir / "connection.json"
        connection_file.write_text(json.dumps(connection))
        connection_file.chmod(0o600)
        if self._owner:
            os.chown(connection_file, self._owner["uid"], self._owner["gid"])
        plan = self._plan(connection_file)
        launcher_env = {"PATH": os.defpath, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        with (self.root / "kernel.log").open("ab") as log:
            self._process = subprocess.Popen(
                [self.config.python, "-m", "llmos_sandbox.launcher", json.dumps(plan)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=launcher_env,
                cwd=self.workdir,
            )
        self._session = Session(
            key=key.encode(), signature_scheme="hmac-sha256", packer="json", unpacker="json", username="llmos"
        )
        self._shell = self._socket(zmq.DEALER, 1)
        self._iopub = self._socket(zmq.SUB, 2)
        self._iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self._poller = zmq.Poller()
        self._poller.register(self._shell, zmq.POLLIN)
        self._poller.register(self._iopub, zmq.POLLIN)
        self._init_pid = self._kernel_pid = 0
        self._handshake()
        prelude = self._execute(_PRELUDE % self.config.max_output_bytes, self.config.start_timeout, self._quiet())
        if not prelude.ok:
            self._fail_start(f"the sandbox prelude failed: {prelude.error}")
        if self.config.startup_code:
            result = self._execute(
                self.config.startup_code, self.config.start_timeout, Capture(self.config, self.home, 0)
            )
            if not result.ok:
                detail = result.error.last_lines() if result.error else "; ".join(result.notes)
                raise SandboxError(f"the startup code failed: {detail}")

    def _quiet(self) -> Capture:
        return Capture(self.config, self.home, 0)

    def _plan(self, connection_file: Path) -> dict[str, Any]:
        mechanisms = self.isolation.mechanisms
        flags = want_namespaces() if "namespaces" in mechanisms else 0
        if self.config.network == "allow":
            flags &= ~CLONE_NEWNET
        limits = self.config.limits
        rlimits = {
            "RLIMIT_CPU": [limits.cpu_seconds, limits.cpu_seconds + 5],
            "RLIMIT_AS": [limits.memory_bytes, limits.memory_bytes],
            "RLIMIT_FSIZE": [limits.file_size_bytes, limits.file_size_bytes],
            "RLIMIT_NOFILE": [limits.open_files, limits.open_files],
            "RLIMIT_CORE": [0, 0],
        }
        if os.geteuid() != 0 and self._cgroup is None:  # per-uid, so on top of what the user runs already
            count = user_process_count() + limits.processes
            rlimits["RLIMIT_NPROC"] = [count, count]
        landlock = None
        if self.isolation.writes:
            reads = None
            if self.isolation.reads:
                reads = [*read_allowlist(self.config.python, self.config.env), *self.config.read_paths]
            landlock = {
                "write_dirs": [str(self.workdir), str(self.home), str(self.rundir)],
                "write_files": ["/dev/null"],
                "read_paths": reads,
                "deny_tcp": self.config.network != "allow",
            }
        argv = [self.config.python, "-m", "ipykernel_launcher", "-f", str(connection_file)]
        argv += ["--HistoryManager.enabled=False", "--IPKernelApp.log_level=ERROR"]
        return {
            "mode": "kernel",
            "cgroup": str(self._cgroup) if self._cgroup else None,
            "unshare": flags,
            "landlock": landlock,
            "user": self._owner,
            "seccomp": self.isolation.seccomp,
            "rlimits": rlimits,
            "cwd": str(self.workdir),
            "argv": argv,
            "env": self._kernel_env(),
        }

    def _kernel_env(self) -> dict[str, str]:
        """Built from nothing: no variable of the parent's (keys, tokens) reaches the kernel."""
        home = str(self.home)
        env = {
            "PATH": f"{Path(self.config.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": str(self.home / "tmp"),
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": f"{home}/.matplotlib",
            "IPYTHONDIR": f"{home}/.ipython",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter",
            "JUPYTER_DATA_DIR": f"{home}/.jupyter",
            "JUPYTER_RUNTIME_DIR": str(self.rundir),
            "JUPYTER_PLATFORM_DIRS": "1",
            "XDG_CACHE_HOME": f"{home}/.cache",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **{name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        }
        env.update(dict(self.config.env))
        return env

    def _socket(self, kind: int, port: int) -> zmq.Socket[bytes]:
        sock = self._context.socket(kind)
        sock.linger = 0
        sock.connect(f"ipc://{self.rundir}/k-{port}")
        self._sockets.append(sock)
        return sock

    def _handshake(self) -> None:
        """Ask for kernel_info until both the reply and an iopub message arrive (iopub is subscribed)."""
        deadline = time.monotonic() + self.config.start_timeout
        replied = heard = False
        while not (replied and heard):
            if self._process is None or self._process.poll() is not None:
                self._fail_start(f"the kernel exited during start ({describe_exit(self._process)})")
            if time.monotonic() > deadline:
                self._fail_start(f"the kernel did not answer within {self.config.start_timeout:g} s")
            if not replied:
                self._session.send(self._shell, "kernel_info_request", {})
            events = dict(self._poller.poll(200))
            if self._shell in events:
                replied = self._drain(self._shell) or replied
            if self._iopub in events:
                heard = self._drain(self._iopub) or heard
        assert self._process is not None
        init = children(self._process.pid)
        self._init_pid = init[0] if init else 0
        kernel = children(self._init_pid) if self._init_pid else []
        self._kernel_pid = kernel[0] if kernel else 0

    def _drain(self, sock: zmq.Socket[bytes]) -> bool:
        """Discard what is waiting on ``sock``; True if anything was."""
        got = False
        while self._session.recv(sock, mode=zmq.NOBLOCK)[1] is not None:
            got = True
        return got

    def _fail_start(self, why: str) -> None:
        code = self._process.poll() if self._process else None
        log = log_tail(self.root / "kernel.log")
        self._stop()
        if code == 78:
            raise IsolationError(f"{why}; the sandbox failed closed: {log}")
        raise SandboxError(f"{why}: {log}")

    def _stop(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        process, self._process = self._process, None
        if process is None:
            return
        if self._cgroup:
            cgroup_kill(self._cgroup)
        for pid in (self._init_pid, self._kernel_pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        self._init_pid = self._kernel_pid = 0


def effective_isolation(config: SandboxConfig, host: Isolation) -> Isolation:
    """What a sandbox with ``config`` gets on a host that offers ``host``; raises when short (fail closed)."""
    if config.network == "require" and not host.network:
        raise IsolationError(f"network isolation is required but this host cannot give it: {host.level}")
    if config.confine_writes == "require" and not host.writes:
        raise IsolationError(f"write confinement is required but this host cannot give it: {host.level}")
    if config.confine_reads == "require" and not (host.reads and host.writes and config.confine_writes != "off"):
        raise IsolationError(f"read confinement is required but this sandbox cannot give it: {host.level}")
    writes = host.writes and config.confine_writes != "off"
    level = replace(
        host,
        network=host.network and config.network != "allow",
        writes=writes,
        reads=host.reads and writes and config.confine_reads != "off",
    )
    if config.strict and level.missing:
        why = "; ".join(level.notes) or "see the level"
        raise IsolationError(
            f"strict mode: this sandbox would lack {', '.join(level.missing)} ({why}); it refuses to run: {level.level}"
        )
    return level
