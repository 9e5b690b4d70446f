"""The Linux system calls the jail needs and Python 3.11's `os` lacks, through ctypes.

Loaded in the executor before any fork, so a preexec function only calls into an
already-loaded libc. Each wrapper raises OSError with the kernel's errno, so a failed
layer is reported as what the kernel said, not as a silent success.
"""

from __future__ import annotations

import ctypes
import os

_LIBC = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_LIBC.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_LIBC.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def arg(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _check(_LIBC.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags), arg(data)), f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_LIBC.umount2(os.fsencode(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    if _SYS_PIVOT_ROOT is None:
        raise OSError(38, f"pivot_root: unknown system call number on {os.uname().machine}")
    _check(_LIBC.syscall(_SYS_PIVOT_ROOT, os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_LIBC.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    """`arg2` may be an address: ctypes would pass a bare int as a 32-bit C int."""
    _check(_LIBC.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl({option})")


def prctl_value(option: int) -> int:
    """prctl's result for a query option (-1 when the kernel refuses it)."""
    return int(_LIBC.prctl(option, 0, 0, 0, 0))
