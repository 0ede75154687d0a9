"""A seccomp filter for the system calls a sandboxed kernel never needs: :func:`install`.

Contract
--------
* :func:`install` loads a classic-BPF filter into the calling thread (inherited by
  every child and kept across ``execve``). The filtered calls fail with ``EPERM``:
  debugging and reading other processes (``ptrace``, ``process_vm_readv/writev``,
  ``pidfd_getfd``), mounts and new namespaces (``mount``, the new mount API,
  ``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag, ``chroot``,
  ``pivot_root``), the kernel's attack surface (``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*``, ``keyctl``/``add_key``/``request_key``), handles
  that bypass path checks (``open_by_handle_at``), and host administration
  (modules, ``kexec``, ``reboot``, swap, clocks, quotas, ``acct``, port I/O).
  ``clone3`` fails with ``ENOSYS`` (its flags sit behind a pointer a filter cannot
  read), so the C library falls back to ``clone``, whose flags are checked.
  A call from another architecture's ABI (x32, a foreign ``AUDIT_ARCH``) kills the process.
* :func:`supported` says whether this machine's architecture has a table here
  (x86_64, aarch64). Install needs no-new-privileges (or ``CAP_SYS_ADMIN``).

Why hand-written BPF rather than libseccomp: the list is short and fixed, the program
is about 100 instructions, and it needs no native library or package on the host.
Not covered: argument filtering beyond ``clone``'s flags; ioctl numbers.
"""

from __future__ import annotations

import ctypes
import errno
import platform

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (little-endian low word of args[0])
_CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

# name: x86_64 number, aarch64 number (from the kernel's uapi headers; "-" where the call does not exist).
_NUMBERS = """
ptrace 101 117, process_vm_readv 310 270, process_vm_writev 311 271, pidfd_getfd 438 438,
mount 165 40, umount2 166 39, pivot_root 155 41, chroot 161 51, unshare 272 97, setns 308 268,
fsopen 430 430, fsconfig 431 431, fsmount 432 432, fspick 433 433, move_mount 429 429, open_tree 428 428,
mount_setattr 442 442, bpf 321 280, perf_event_open 298 241, userfaultfd 323 282,
io_uring_setup 425 425, io_uring_enter 426 426, io_uring_register 427 427,
keyctl 250 219, add_key 248 217, request_key 249 218, open_by_handle_at 304 265, name_to_handle_at 303 264,
init_module 175 105, finit_module 313 273, delete_module 176 106, kexec_load 246 104, kexec_file_load 320 294,
reboot 169 142, swapon 167 224, swapoff 168 225, acct 163 89, settimeofday 164 170, clock_settime 227 112,
clock_adjtime 305 266, adjtimex 159 171, quotactl 179 60, lookup_dcookie 212 18, iopl 172 -, ioperm 173 -,
clone 56 220, clone3 435 435
"""
_ALLOWED_HERE = ("clone", "clone3")  # handled on their own: flags checked, ENOSYS
# machine: (AUDIT_ARCH, first number of a foreign ABI on the same arch value, column in _NUMBERS)
_ARCHES = {"x86_64": (0xC000003E, 0x40000000, 1), "aarch64": (0xC00000B7, None, 2)}


def _numbers(machine: str) -> dict[str, int]:
    column = _ARCHES[machine][2]
    rows = [entry.split() for entry in _NUMBERS.replace("\n", " ").split(",")]
    return {row[0]: int(row[column]) for row in rows if row[column] != "-"}


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def supported() -> bool:
    return platform.machine() in _ARCHES


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions for ``machine`` (default: this one)."""
    machine = machine or platform.machine()
    arch, foreign, _ = _ARCHES[machine]
    numbers = _numbers(machine)
    deny = (_RET, 0, 0, _RET_ERRNO | errno.EPERM)
    code = [(_LD_ABS_W, 0, 0, _OFFSET_ARCH), (_JEQ, 1, 0, arch), (_RET, 0, 0, _RET_KILL_PROCESS)]
    code.append((_LD_ABS_W, 0, 0, _OFFSET_NR))
    if foreign is not None:
        code += [(_JGE, 0, 1, foreign), (_RET, 0, 0, _RET_KILL_PROCESS)]
    for name, number in numbers.items():
        if name not in _ALLOWED_HERE:
            code += [(_JEQ, 0, 1, number), deny]
    code += [(_JEQ, 0, 1, numbers["clone3"]), (_RET, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    code += [(_JEQ, 0, 3, numbers["clone"]), (_LD_ABS_W, 0, 0, _OFFSET_ARG0), (_JSET, 0, 1, _CLONE_NAMESPACES), deny]
    code.append((_RET, 0, 0, _RET_ALLOW))
    return code


def install() -> None:
    """Load the filter into this process; raises ``OSError`` when the host refuses."""
    if not supported():
        raise OSError(errno.ENOSYS, f"no seccomp table for the {platform.machine()} architecture")
    instructions = program()
    array = (_Instruction * len(instructions))(*(_Instruction(*i) for i in instructions))
    prog = _Program(len(instructions), array)
    libc = ctypes.CDLL(None, use_errno=True)
    args = (ctypes.c_ulong(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prog))
    if libc.prctl(*args, ctypes.c_ulong(0), ctypes.c_ulong(0)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {errno.errorcode.get(err, err)}")
