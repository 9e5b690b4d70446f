"""A seccomp deny-list for generated code: the system calls a Python program never needs.

Why a deny-list, not an allow-list: the interpreter's packages (numpy's BLAS threads,
pandas, multiprocessing) use a wide and changing set of calls; what must never run is a
short, stable list of ways to reach the kernel's attack surface or to leave the jail
(mount namespaces, other processes' memory, kernel keys, eBPF, io_uring...). Each denied
call fails with EPERM, so a program probing them gets an ordinary OSError.

Compatibility architectures are covered: a system call made through another ABI
(i386 via `int 0x80`, x32 with the 0x40000000 bit) bypasses a table of x86-64 numbers,
so the filter kills the process on any arch but the native one and on any x32 number.
`clone` is allowed except with namespace flags; `clone3` passes its flags in memory,
which a classic BPF filter cannot read, so it fails with ENOSYS and the C library falls
back to `clone`, as it does on kernels that predate it.

The filter is built once in the executor (`FILTER`) and installed in the child, after
no_new_privs, as the last step before exec: the program's first line already runs
under it, and so does everything it forks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from eager.executor_pool._syscalls import PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prctl

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_NAMESPACE_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16

# x86-64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENIED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "statmount": 457, "listmount": 458, "open_tree_attr": 467,
    "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "reboot": 169, "swapon": 167, "swapoff": 168, "open_by_handle_at": 304,
}
_CLONE, _CLONE3 = 56, 435


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def build() -> bytes:
    """The filter program for x86-64, as the kernel reads it (struct sock_filter[])."""
    denied = sorted(DENIED_X86_64.values())
    head = [
        _insn(_LD_W_ABS, _OFFSET_ARCH), _insn(_JEQ, _AUDIT_ARCH_X86_64, jt=1), _insn(_RET, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFFSET_NR), _insn(_JGE, _X32_BIT, jf=1), _insn(_RET, _RET_KILL_PROCESS),
    ]
    # After the per-call tests come, in this order: clone3 test, clone test, load arg0,
    # flags test, ALLOW, DENY (EPERM), ENOSYS.
    n = len(denied)
    body = [_insn(_JEQ, nr, jt=(n - i - 1) + 5) for i, nr in enumerate(denied)]
    tail = [
        _insn(_JEQ, _CLONE3, jt=5),
        _insn(_JEQ, _CLONE, jf=2),
        _insn(_LD_W_ABS, _OFFSET_ARG0),
        _insn(_JSET, _NAMESPACE_FLAGS, jt=1),
        _insn(_RET, _RET_ALLOW),
        _insn(_RET, _RET_ERRNO | errno.EPERM),
        _insn(_RET, _RET_ERRNO | errno.ENOSYS),
    ]
    return b"".join(head + body + tail)


SUPPORTED = os.uname().machine == "x86_64"
FILTER = ctypes.create_string_buffer(build()) if SUPPORTED else None
_PROG = _Fprog(len(FILTER.raw) // 8, ctypes.addressof(FILTER)) if FILTER is not None else None


def install() -> None:
    """no_new_privs, then the filter, on the calling process (a child about to exec)."""
    if _PROG is None:
        raise OSError(errno.ENOSYS, f"no seccomp filter for {os.uname().machine}")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(_PROG))
