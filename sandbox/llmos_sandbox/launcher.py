"""The process that turns a plan into an isolated kernel: ``python -m llmos_sandbox.launcher PLAN``.

Contract
--------
``PLAN`` is a JSON object written by :mod:`llmos_sandbox.kernel` (or the probe in
:mod:`llmos_sandbox.isolation`). Three processes result::

    launcher  joins the cgroup, unshares the namespaces, waits for init; exits with
              init's status, and kills init when its own parent disappears
    init      pid 1 of the new pid namespace (when there is one) and a child
              subreaper: orphans land here; in its mount namespace makes every
              mount private, mounts a /proc of its own and reveals the allowed
              paths under folders nobody may enter; applies Landlock, switches to
              the unprivileged uid, drops every capability, loads the seccomp
              filter; forks the kernel, reaps, exits with the kernel's status
    kernel    applies the resource limits, clears signal dispositions, execs
              ``argv`` with exactly ``env`` (mode "kernel") or attacks its own
              isolation and prints the findings as JSON (mode "probe")

Killing init ends the whole pid namespace. In mode "kernel" any isolation step
that fails is fatal (exit status 78, the reason on stderr): the parent asked only for
what the probe found available, so a failure means something changed, and the
sandbox fails closed. In mode "probe" failures are recorded, not fatal.
Not covered: choosing the plan (the parent does), talking to the kernel.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos_sandbox import filesystem, isolation

EXIT_ISOLATION_FAILED = 78


def main(argv: list[str]) -> None:
    plan: dict[str, Any] = json.loads(argv[1])
    strict = plan["mode"] == "kernel"
    applied: dict[str, object] = {}

    def step(name: str, action: Callable[[], object]) -> None:
        try:
            action()
            applied[name] = True
        except OSError as exc:
            applied[name] = f"refused ({exc})"
            if strict:
                print(f"llmos-sandbox: isolation step {name!r} failed: {exc}", file=sys.stderr, flush=True)
                os._exit(EXIT_ISOLATION_FAILED)

    if plan.get("cgroup"):
        step("cgroup_pids", lambda: Path(plan["cgroup"], "cgroup.procs").write_text(str(os.getpid())))
    if plan.get("unshare"):
        step("namespaces", lambda: _enter_namespaces(plan["unshare"]))
    init = os.fork()
    if init:
        _wait_as_launcher(init)
    _run_init(plan, applied, step)


def _enter_namespaces(flags: int) -> None:
    uid, gid = os.getuid(), os.getgid()
    isolation.unshare(flags)
    if flags & isolation.CLONE_NEWUSER:
        isolation.map_user_namespace(uid, gid)


def _wait_as_launcher(init: int) -> None:
    """Wait for init; if our own parent dies first, take the sandbox down with us."""
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: os.kill(init, signal.SIGKILL))
    while True:
        pid, status = os.waitpid(init, os.WNOHANG)
        if pid:
            os._exit(_exit_code(status))
        if os.getppid() != parent:
            os.kill(init, signal.SIGKILL)
        signal.sigtimedwait({signal.SIGCHLD}, 1.0)


def _exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _run_init(
    plan: dict[str, Any], applied: dict[str, object], step: Callable[[str, Callable[[], object]], None]
) -> None:
    try:
        isolation.set_parent_death_signal(signal.SIGKILL)
        isolation.set_child_subreaper()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts go to the kernel, never to init
        if plan.get("unshare", 0) & isolation.CLONE_NEWNS and applied.get("namespaces") is True:
            step("private_mounts", filesystem.make_mounts_private)
            if applied.get("private_mounts") is True:
                step("private_proc", filesystem.mount_private_proc)
        _confine(plan, applied, step)
        kernel = os.fork()
        if kernel == 0:
            _run_kernel(plan, applied, step)
        while True:  # reap everything; leave when the kernel does
            pid, status = os.wait()
            if pid == kernel:
                os._exit(_exit_code(status))
    except BaseException as exc:  # init must never fall back into the launcher's code
        print(f"llmos-sandbox: init failed: {exc!r}", file=sys.stderr, flush=True)
        os._exit(EXIT_ISOLATION_FAILED)


def _confine(
    plan: dict[str, Any], applied: dict[str, object], step: Callable[[str, Callable[[], object]], None]
) -> None:
    """Landlock (reads confined to the allow-list when it has one), then uid, capabilities, seccomp."""
    landlock, user = plan.get("landlock"), plan.get("user")
    reads = landlock.get("read_paths") if landlock else None
    if landlock and reads is not None and user and applied.get("private_mounts") is True:
        revealed = [*reads, *landlock["write_dirs"]]
        step("reveal", lambda: filesystem.reveal(revealed))
    if landlock:
        if reads is not None and applied.get("private_proc") is True:
            reads = [*reads, "/proc"]  # the sandbox's own /proc: it shows no host process
        applied["landlock_abi"] = isolation.landlock_abi()
        step(
            "landlock",
            lambda: isolation.landlock_confine(
                landlock["write_dirs"], landlock["write_files"], landlock.get("deny_tcp", True), True, reads
            ),
        )
    step("no_new_privs", isolation.set_no_new_privs)
    if user:
        step("user", lambda: isolation.become_user(user["uid"], user["gid"]))
    step("no_capabilities", isolation.drop_capabilities)
    if plan.get("seccomp"):
        step("seccomp", isolation.install_seccomp)


def _run_kernel(
    plan: dict[str, Any], applied: dict[str, object], step: Callable[[str, Callable[[], object]], None]
) -> None:
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        step("rlimits", lambda: _set_rlimits(plan.get("rlimits", {})))
        os.chdir(plan["cwd"])
        if plan["mode"] == "probe":
            print(json.dumps(_attack(plan["probe"], applied)), flush=True)
            os._exit(0)
        os.execve(plan["argv"][0], plan["argv"], plan["env"])
    except BaseException as exc:
        print(f"llmos-sandbox: kernel start failed: {exc!r}", file=sys.stderr, flush=True)
        os._exit(EXIT_ISOLATION_FAILED)


def _set_rlimits(limits: dict[str, list[int]]) -> None:
    for name, (soft, hard) in limits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _attack(targets: dict[str, Any], applied: dict[str, object]) -> dict[str, Any]:
    """Try what a kernel must not be able to do; report what got through."""
    return {
        "applied": applied,
        "network_blocked": _fails(lambda: socket.create_connection(("127.0.0.1", targets["port"]), timeout=2).close()),
        "writes_blocked": _fails(lambda: Path(targets["outside"], "escape").write_text("x")),
        "inside_write_ok": not _fails(lambda: Path(targets["inside"], "ok").write_text("x")),
        "reads_blocked": _fails(lambda: Path(targets["outside"], "secret").read_text())
        and _fails(lambda: Path(f"/proc/{targets['host_pid']}/cmdline").read_bytes())
        and not _fails(lambda: Path(targets["inside"], "ok").read_text()),
        "uid": os.getuid(),
        "capabilities": int(_status("CapEff") or "1", 16),
        "seccomp_mode": int(_status("Seccomp") or "0"),
        "quota_stopped": _quota_stops(Path(targets["inside"]), targets["files"]),
    }


def _fails(action: Callable[[], object]) -> bool:
    try:
        action()
    except OSError:
        return True
    return False


def _status(field: str) -> str:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _quota_stops(folder: Path, attempts: int) -> bool:
    """Create up to ``attempts`` empty files; True when the quota (ENOSPC) stopped us first."""
    try:
        for number in range(attempts):
            Path(folder, f"f{number}").touch()
    except OSError as exc:
        return exc.errno == 28
    return False


if __name__ == "__main__":
    main(sys.argv)
