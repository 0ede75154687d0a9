"""What the host lets us take away from a kernel, measured rather than assumed.

Contract
--------
* :class:`Isolation` is the level a sandbox really runs at. It is what the policy
  and the audit log read. Each layer is True only when a probe process, isolated
  the same way as a kernel, failed the matching attack: ``network`` when it could not
  reach a server listening on loopback; ``writes`` when it could not create a file
  outside its own folders; ``reads`` when it could read neither a file outside its
  allow-list nor ``/proc`` of a host process; ``user`` when it ran as an unprivileged
  uid with no capabilities; ``seccomp`` when its filter was in force; ``quota`` when
  creating files in its folder stopped at the inode limit. ``processes`` is True when
  the process count is bounded (a cgroup ``pids.max``, or ``RLIMIT_NPROC`` for a
  non-root user, which the kernel does not enforce on root). ``missing`` names the
  layers the host could not give; ``notes`` say why.
* :func:`probe` runs that probe once per process (about 100 ms) and caches it.
* The low-level helpers (``unshare``, Landlock, capabilities, uids, cgroups) are called by
  :mod:`llmos_sandbox.launcher` in the child; each raises ``OSError`` when the host
  refuses, so the launcher can fail closed.

Mechanisms, strongest first: network, pid and mount namespaces (``unshare``; a user
namespace too when not root), Landlock for file reads, writes and execution (and TCP
connect/bind where its ABI has it, and signal scoping), a private ``/proc``, an
unprivileged uid (``nobody`` when we are root), a seccomp filter
(:mod:`llmos_sandbox.seccomp`), a tmpfs with byte and inode limits on the sandbox's
folder (:mod:`llmos_sandbox.filesystem`), a cgroup ``pids.max`` for the process count,
then no-new-privileges and an empty capability set. Not covered: metadata (``stat``
of a path outside the allow-list), CPU and memory bandwidth between sandboxes, and
kernel bugs reachable through the system calls the filter lets through.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmos_errors import LlmosError

from llmos_sandbox import filesystem, seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4

# Landlock system calls have the same numbers on every architecture (generic table).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_READ_ACCESS = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FS_WRITE_ACCESS = (
    _FS_WRITE_FILE
    | (1 << 4)  # REMOVE_DIR
    | (1 << 5)  # REMOVE_FILE
    | (1 << 6)  # MAKE_CHAR
    | (1 << 7)  # MAKE_DIR
    | (1 << 8)  # MAKE_REG
    | (1 << 9)  # MAKE_SOCK
    | (1 << 10)  # MAKE_FIFO
    | (1 << 11)  # MAKE_BLOCK
    | (1 << 12)  # MAKE_SYM
)
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _prctl(option: int, arg: int = 0) -> None:
    args = [ctypes.c_ulong(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)]
    _check(_libc.prctl(*args), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def map_user_namespace(uid: int, gid: int) -> None:
    """Map our own uid/gid into a fresh user namespace (the unprivileged path)."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def set_parent_death_signal(signal_number: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal_number)


def set_child_subreaper() -> None:
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    for cap in range(64):
        if _libc.prctl(ctypes.c_ulong(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) < 0:
            break  # EINVAL past the last capability this kernel knows
    _libc.prctl(ctypes.c_ulong(_PR_CAP_AMBIENT), ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers, 0 when it has none."""
    result = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION)
    return max(result, 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_confine(
    write_dirs: list[str], write_files: list[str], deny_tcp: bool, scope: bool, read_paths: list[str] | None = None
) -> int:
    """Allow writes only beneath ``write_dirs`` (and to ``write_files``); returns the ABI used.

    With ``read_paths`` (a list, even empty) reading and executing are allowed only
    beneath those paths and the write paths; with None they stay open. With
    ``deny_tcp`` (ABI 4+) TCP connect and bind are denied everywhere; with ``scope``
    (ABI 6+) signals and abstract unix sockets cannot leave the sandbox. Needs
    no-new-privileges (set here).
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(38, "Landlock is not available on this kernel")
    reads = _FS_READ_ACCESS if read_paths is not None else 0
    fs = _FS_WRITE_ACCESS | reads | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0
    scoped = _SCOPE_SIGNAL | _SCOPE_ABSTRACT_UNIX_SOCKET if scope and abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = _check(
        _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0), "ruleset"
    )
    try:
        file_access = _FS_WRITE_FILE | (_FS_READ_FILE if reads else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
        rules = [(path, fs) for path in write_dirs] + [(path, file_access) for path in write_files]
        rules += [(path, reads) for path in read_paths or ()]
        for path, access in rules:
            _add_rule(ruleset, path, access)
        set_no_new_privs()
        _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _add_rule(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE  # rights a file can hold
        rule = _PathBeneath(access, fd)
        _check(
            _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock rule for {path}",
        )
    finally:
        os.close(fd)


def become_user(uid: int, gid: int) -> None:
    """Drop the bounding set while we still may, then switch to ``uid``/``gid`` for good."""
    for cap in range(64):
        if _libc.prctl(ctypes.c_ulong(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) < 0:
            break
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def install_seccomp() -> None:
    seccomp.install()


# --- cgroups: a pids.max per sandbox, where the host lets us create one ------------------


def cgroup_pids_root() -> Path | None:
    """A writable cgroup folder with the pids controller (v1 or v2), or None."""
    candidates = [Path("/sys/fs/cgroup/pids")]
    v2 = Path("/sys/fs/cgroup")
    if "pids" in _read(v2 / "cgroup.subtree_control").split():
        candidates.append(v2)
    for root in candidates:
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            return root
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def cgroup_create(name: str, max_pids: int) -> Path:
    """Create a child cgroup with ``pids.max``; raises OSError where the host refuses."""
    root = cgroup_pids_root()
    if root is None:
        raise OSError(1, "no writable cgroup with the pids controller")
    group = root / name
    group.mkdir(exist_ok=True)
    (group / "pids.max").write_text(str(max_pids))
    return group


def cgroup_kill(group: Path) -> None:
    """SIGKILL every process in ``group`` until it is empty (bounded)."""
    for _ in range(50):
        pids = [int(p) for p in _read(group / "cgroup.procs").split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        threading.Event().wait(0.01)


def cgroup_remove(group: Path) -> None:
    """Kill whatever is left in ``group`` and remove it (best effort)."""
    cgroup_kill(group)
    with contextlib.suppress(OSError):
        group.rmdir()


# --- the level, as measured -------------------------------------------------------------

LAYERS = ("network", "writes", "reads", "processes", "user", "seccomp", "quota")
UNPRIVILEGED_UID = UNPRIVILEGED_GID = 65534  # nobody: what kernels run as when we are root


@dataclass(frozen=True)
class Isolation:
    """The isolation a sandbox really has. Read by the policy and written to the audit log.

    ``network``: no network reachable (not even loopback). ``writes``: file writes are
    confined to the session's folders. ``processes``: the process count is bounded.
    ``reads``: reads confined to an allow-list (Python, system libraries, its folders,
    files handed to it) and a ``/proc`` of its own. ``user``: runs as an unprivileged uid
    without capabilities. ``seccomp``: dangerous system calls filtered. ``quota``: its
    folder has a byte and file limit. ``mechanisms`` names what provides it, for the log.
    """

    network: bool
    writes: bool
    processes: bool
    reads: bool = False
    user: bool = False
    seccomp: bool = False
    quota: bool = False
    mechanisms: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        """The layers this level lacks, in :data:`LAYERS` order."""
        return tuple(name for name in LAYERS if not getattr(self, name))

    @property
    def level(self) -> str:
        """One line for people and logs, e.g. ``network: isolated; writes: confined; ...``."""
        network = "isolated" if self.network else "not isolated"
        writes = "confined to the working folder" if self.writes else "not confined"
        reads = "confined to an allow-list" if self.reads else "not confined"
        processes = "limited" if self.processes else "not limited"
        user = "unprivileged" if self.user else "privileged uid"
        seccomp = "filtered" if self.seccomp else "not filtered"
        quota = "limited" if self.quota else "not limited"
        via = ", ".join(self.mechanisms) or "rlimits only"
        return (
            f"network: {network}; writes: {writes}; reads: {reads}; processes: {processes}; user: {user}; "
            f"system calls: {seccomp}; disk quota: {quota} (via {via})"
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "level": self.level, "missing": list(self.missing)}


class IsolationError(LlmosError, RuntimeError):
    """The configuration asks for more isolation than this host gives (fail closed)."""


def want_namespaces() -> int:
    """The unshare flags to ask for: net+pid+mount, plus a user namespace when not root."""
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
    return flags if os.geteuid() == 0 else flags | CLONE_NEWUSER


def want_user() -> dict[str, int] | None:
    """The uid/gid a kernel switches to: nobody when we are root (else it keeps ours, in a user namespace)."""
    return {"uid": UNPRIVILEGED_UID, "gid": UNPRIVILEGED_GID} if os.geteuid() == 0 else None


_probe_lock = threading.Lock()
_probe_cache: Isolation | None = None


def probe(refresh: bool = False) -> Isolation:
    """Measure what this host allows by isolating a throwaway child and attacking it."""
    global _probe_cache
    with _probe_lock:
        if _probe_cache is None or refresh:
            _probe_cache = _run_probe()
        return _probe_cache


def _run_probe() -> Isolation:
    try:
        group: Path | None = cgroup_create(f"llmos-probe-{os.getpid()}", 64)
    except OSError:
        group = None
    try:
        return _attack_probe(group)
    finally:
        if group:
            cgroup_remove(group)


_PROBE_FILES = 16  # the probe's inode quota; its attack tries ten times as many


def _attack_probe(group: Path | None) -> Isolation:
    with tempfile.TemporaryDirectory(prefix="llmos-probe-") as tmp, socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        Path(tmp).chmod(0o711)  # the unprivileged uid must reach ``inside``
        inside, outside = Path(tmp, "inside"), Path(tmp, "outside")
        inside.mkdir()
        outside.mkdir()
        Path(outside, "secret").write_text("host secret")
        quota_note = _probe_quota(inside)
        user = want_user()
        try:
            reads: list[str] | None = list(filesystem.read_allowlist(sys.executable, tuple(_probe_env().items())))
        except (OSError, subprocess.SubprocessError) as exc:
            reads, quota_note = None, f"{quota_note}; read allow-list: {exc}".strip("; ")
        plan = {
            "mode": "probe",
            "unshare": want_namespaces(),
            "landlock": {"write_dirs": [str(inside)], "write_files": ["/dev/null"], "read_paths": reads},
            "user": user,
            "seccomp": True,
            "cgroup": str(group) if group else None,
            "cwd": str(inside),
            "probe": {
                "port": server.getsockname()[1],
                "inside": str(inside),
                "outside": str(outside),
                "host_pid": os.getpid(),
                "files": _PROBE_FILES * 10 if not quota_note else 0,
            },
        }
        command = [sys.executable, "-m", "llmos_sandbox.launcher", json.dumps(plan)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=_probe_env())
            report = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
            return Isolation(False, False, False, notes=(f"probe failed: {exc!r}",))
        finally:
            if not quota_note:
                with contextlib.suppress(OSError):
                    filesystem.unmount(inside)
    return _judge(report, quota_note)


def _probe_quota(inside: Path) -> str:
    """Put the probe's quota on ``inside``; the reason when the host refuses, else ''."""
    if os.geteuid() != 0:
        return "quota: needs root to mount a tmpfs with limits"
    owner = want_user() or {"uid": os.getuid(), "gid": os.getgid()}
    try:
        filesystem.mount_quota(inside, 2**20, _PROBE_FILES, owner["uid"], owner["gid"])
    except OSError as exc:
        return f"quota: refused ({exc})"
    return ""


def _judge(report: dict[str, Any], quota_note: str) -> Isolation:
    applied: dict[str, object] = report["applied"]
    # Landlock alone blocks TCP but not UDP: only a network namespace counts as isolation.
    network = bool(report["network_blocked"]) and applied.get("namespaces") is True
    writes = bool(report["writes_blocked"]) and bool(report["inside_write_ok"])
    reads = bool(report["reads_blocked"]) and bool(report["inside_write_ok"]) and applied.get("landlock") is True
    processes = applied.get("cgroup_pids") is True or (os.geteuid() != 0 and applied.get("rlimits") is True)
    user = report["uid"] != 0 and report["capabilities"] == 0
    seccomp_on = report["seccomp_mode"] == 2 and applied.get("seccomp") is True
    quota = not quota_note and bool(report["quota_stopped"])
    mechanisms = tuple(name for name, ok in applied.items() if ok is True)
    notes = [f"{name}: {value}" for name, value in applied.items() if value is not True]
    notes += [quota_note] if quota_note else []
    return Isolation(
        network=network,
        writes=writes,
        processes=processes,
        reads=reads,
        user=user,
        seccomp=seccomp_on,
        quota=quota,
        mechanisms=mechanisms + (("tmpfs_quota",) if quota else ()),
        notes=tuple(notes),
    )


def _probe_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
