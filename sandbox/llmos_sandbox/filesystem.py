"""What a kernel may read, and the mounts that shape its view: read allow-list, private /proc, quota.

Contract
--------
* :func:`read_allowlist` is every path a kernel of ``python`` must read to start and
  import what its environment has: the interpreter's prefixes, its ``sys.path``, the
  folders of editable installs, the system's libraries and tools (``/usr``, ``/lib*``,
  ``/bin``), a few files of ``/etc`` (the loader's cache, time zone, passwd/group, fonts),
  and the harmless devices. Asked once per interpreter and environment (one
  ``python -c``, cached). The sandbox adds its own folders and the files the user hands it.
* In the kernel's own mount namespace (:mod:`llmos_sandbox.launcher` calls these as
  root, before dropping privileges): :func:`make_mounts_private` (nothing propagates
  back to the host), :func:`mount_private_proc` (a ``/proc`` that shows only the
  sandbox's processes), and :func:`reveal` (a tmpfs over a folder the unprivileged uid
  cannot enter, e.g. ``/root`` when the interpreter lives in ``/root/.pyenv``, with only
  the allowed paths bound back into it: the rest of that folder does not exist there).
* In the host's namespace: :func:`mount_quota` puts a tmpfs with ``size=`` and
  ``nr_inodes=`` on a sandbox's folder (the byte and file quota), :func:`unmount` takes it
  away. Both need root; each raises ``OSError`` when the host refuses.

Not covered: the rules themselves (Landlock, in :mod:`llmos_sandbox.isolation`);
metadata (``stat`` of a path outside the list still works where the uid may search).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2

SYSTEM_READS = (
    *("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"),
    *("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group"),
    *("/etc/nsswitch.conf", "/etc/mime.types", "/etc/fonts"),
    *("/dev/zero", "/dev/urandom", "/dev/random", "/sys/devices/system/cpu"),
)

_ASK_PYTHON = """
import json, os, sys
paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)}
paths.update(p for p in sys.path if p)
for module in list(sys.modules.values()):  # setuptools' editable finders map packages to folders
    mapping = getattr(module, "MAPPING", None)
    if getattr(module, "__name__", "").startswith("__editable__") and isinstance(mapping, dict):
        paths.update(str(p) for p in mapping.values())
print(json.dumps(sorted(paths)))
"""

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc.mount(encode(source), target.encode(), encode(kind), ctypes.c_ulong(flags), encode(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {kind or source} on {target}: {os.strerror(err)}")


def read_allowlist(python: str, env: tuple[tuple[str, str], ...] = ()) -> tuple[str, ...]:
    """Existing paths (resolved) a kernel of ``python`` with ``env`` must read."""
    return _python_paths(python, env) + tuple(p for p in SYSTEM_READS if os.path.exists(p))


@functools.lru_cache(maxsize=8)
def _python_paths(python: str, env: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    environment = {"PATH": os.defpath, **dict(env)}
    done = subprocess.run([python, "-c", _ASK_PYTHON], capture_output=True, text=True, timeout=60, env=environment)
    if done.returncode != 0:
        raise OSError(f"cannot ask {python} for its paths: {done.stderr.strip()[-500:]}")
    found = {os.path.realpath(p) for p in json.loads(done.stdout)} | {os.path.realpath(python)}
    found = {p for p in found if os.path.exists(p)}
    return tuple(sorted(found))


def outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those beneath another one of them."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def make_mounts_private() -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_private_proc() -> None:
    """A fresh procfs for the calling process's pid namespace (call as its pid 1)."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def blocked_ancestor(path: str) -> str | None:
    """The outermost folder above ``path`` that others (an unprivileged uid) may not enter."""
    current = Path("/")
    for part in Path(path).parts[1:-1]:
        current = current / part
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return str(current)
    return None


def reveal(paths: Iterable[str]) -> list[str]:
    """Cover each blocked folder with an empty tmpfs and bind only ``paths`` back; returns the folders covered."""
    groups: dict[str, list[str]] = {}
    for path in outermost(paths):
        blocked = blocked_ancestor(path)
        if blocked:
            groups.setdefault(blocked, []).append(path)
    for folder, inside in groups.items():
        handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in inside}
        try:
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k,nr_inodes=1024")
            for path, handle in handles.items():
                if stat.S_ISDIR(os.fstat(handle).st_mode):
                    os.makedirs(path, mode=0o755, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                    Path(path).touch()
                _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
        finally:
            for handle in handles.values():
                os.close(handle)
    return list(groups)


def mount_quota(folder: Path, max_bytes: int, max_files: int, uid: int, gid: int) -> None:
    """A tmpfs of at most ``max_bytes`` and ``max_files`` inodes on ``folder`` (the host's namespace)."""
    options = f"size={max_bytes},nr_inodes={max_files},mode=0700,uid={uid},gid={gid}"
    _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV, options)
    _mount(None, str(folder), None, MS_PRIVATE)  # our mount, not a peer's


def unmount(folder: Path) -> None:
    if _libc.umount2(str(folder).encode(), MNT_DETACH) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {folder}: {os.strerror(err)}")
