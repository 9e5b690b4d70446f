"""The jail's file system: a minimal read-only root, built with bind mounts and pivot_root.

A network namespace does not cover unix sockets, and uid permissions do not hide the
project tree, /etc or other users' world-readable files: the only view that leaks
nothing is one that contains nothing but what the interpreter needs. So the child, in
a mount namespace of its own, builds a new root on a small tmpfs:

- read-only binds of /usr, the top-level library and binary directories (or their
  merged-/usr symlinks), and the interpreter's own prefixes (a venv and its base, at
  their own paths, because a venv names its base by absolute path);
- a generated /etc: a passwd and group with only the sandbox user, hosts, nsswitch.conf,
  plus the loader's cache, the alternatives symlinks and the font configuration;
- a /dev with null, zero, full, random and urandom (no tty), a /proc of the child's own
  pid namespace, and no /sys, /run, /var, /home or /root beyond the path to a prefix;
- one writable tmpfs of a fixed size holding the working directory, /tmp and /dev/shm,
  so the sandbox's whole disk use is bounded, and nothing it writes ever lands on the
  host: when the last process of the jail exits, the kernel frees the tmpfs.

The executor plans the root (`RootPlan`, which needs subprocesses and file reads) and
the child only carries it out (`enter`), with system calls, before it drops root.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass

from eager.executor_pool._syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    pivot_root,
    umount,
)

WORKDIR = "/sandbox"  # the program's working directory and home, inside the jail
RUNNER = "/eager/_runner.py"
USER = HOSTNAME = "sandbox"
TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr")
ETC_BINDS = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/fonts")  # fonts: matplotlib runs fc-list
DEVICES = ("null", "zero", "full", "random", "urandom")
_RO = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV


@functools.lru_cache(maxsize=8)
def prefixes(python: str) -> tuple[str, ...]:
    """Where `python` keeps its standard library and packages (its venv and the base
    Python it was made from), asked of the interpreter itself, once per process."""
    code = "import json, sys; print(json.dumps([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]))"
    found = subprocess.run([python, "-I", "-c", code], capture_output=True, check=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    return tuple(json.loads(found.stdout))


def _outermost(paths: list[str]) -> tuple[str, ...]:
    """The paths not inside another of them."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return tuple(kept)


def binds_for(python: str) -> tuple[str, ...]:
    """Host directories the jail of `python` shows, read-only, at their own paths."""
    binds = [path for path in TOP_LEVEL if os.path.isdir(path) and not os.path.islink(path)]
    binds += [os.path.abspath(p) for p in (*prefixes(python), os.path.dirname(os.path.abspath(python)))]
    return _outermost(binds) + tuple(p for p in ETC_BINDS if os.path.exists(p))


def made_by_jail(binds: tuple[str, ...], directory: str) -> bool:
    """Whether `directory` is one the jail makes itself (mode 0755) on the way to a bind."""
    prefix = directory.rstrip("/") + "/"
    return any(b.startswith(prefix) for b in binds)


@dataclass(frozen=True)
class RootPlan:
    """What the child mounts and writes; computed in the executor."""

    binds: tuple[str, ...]
    links: tuple[tuple[str, str], ...]  # symlinks: (path, target), such as a merged /usr's /lib
    files: tuple[tuple[str, bytes], ...]  # files written into the root before it turns read-only
    uid: int
    disk_bytes: int

    @classmethod
    def for_interpreter(cls, python: str, runner: bytes, uid: int, disk_bytes: int) -> RootPlan:
        links = [(path, os.readlink(path)) for path in (*TOP_LEVEL, "/etc/localtime") if os.path.islink(path)]
        etc = {
            "passwd": f"{USER}:x:{uid}:{uid}:Eager sandbox:{WORKDIR}:/usr/sbin/nologin\n",
            "group": f"{USER}:x:{uid}:\n",
            "hosts": f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n",
            "hostname": f"{HOSTNAME}\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        }
        files = tuple((f"/etc/{name}", text.encode()) for name, text in etc.items()) + ((RUNNER, runner),)
        return cls(binds_for(python), tuple(links), files, uid, disk_bytes)


def _bind(source: str, target: str, read_only: bool = True) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, _RO)


def enter(plan: RootPlan, staging: str) -> None:
    """In the child, in a fresh mount namespace and pid namespace, as root: build the root
    at `staging` (any existing directory: the mount is private), pivot into it, and leave
    the working directory as the current one."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("eager-root", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    root = staging
    # a prefix inside a writable place (a checkout under /tmp) is shown on top of the jail's own tmpfs there
    hidden = tuple(source for source in plan.binds if _under_writable(source))
    for source in plan.binds:
        if source not in hidden:
            _bind(source, root + source)
    for path, target in plan.links:
        os.makedirs(os.path.dirname(root + path), mode=0o755, exist_ok=True)
        os.symlink(target, root + path)
    for path, data in plan.files:
        os.makedirs(os.path.dirname(root + path), mode=0o755, exist_ok=True)
        with open(root + path, "wb") as f:
            f.write(data)
        os.chmod(root + path, 0o644)
    os.makedirs(root + "/dev", mode=0o755)
    for device in DEVICES:
        _bind(f"/dev/{device}", f"{root}/dev/{device}", read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", mode=0o555)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _writable(plan, root)
    for source in hidden:
        _bind(source, root + source)
    mount(None, root, None, _RO)
    os.chdir(root)
    pivot_root(".", ".")  # the old root ends up stacked on the new one ...
    umount(".", MNT_DETACH)  # ... and is detached: nothing of the host's tree stays reachable
    os.chdir(WORKDIR)


def _under_writable(path: str) -> bool:
    return any(path == target or path.startswith(target + "/") for target in (WORKDIR, "/tmp", "/dev/shm"))


def _writable(plan: RootPlan, root: str) -> None:
    """One size-limited tmpfs, shown as the working directory, /tmp and /dev/shm."""
    scratch = root + "/.scratch"
    os.makedirs(scratch)
    mount("eager-work", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={plan.disk_bytes}")
    for name, target, mode in (("work", WORKDIR, 0o700), ("tmp", "/tmp", 0o1777), ("shm", "/dev/shm", 0o1777)):
        os.mkdir(f"{scratch}/{name}")
        os.chmod(f"{scratch}/{name}", mode)
        if name == "work":
            os.chown(f"{scratch}/{name}", plan.uid, plan.uid)
        os.makedirs(root + target, mode=0o755, exist_ok=True)
        mount(f"{scratch}/{name}", root + target, None, MS_BIND)
    umount(scratch, MNT_DETACH)
    os.rmdir(scratch)
