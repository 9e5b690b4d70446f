"""The sandbox around one interpreter: limits, an unprivileged uid, no network, whole-slot kills.

Model-written code is hostile until proven otherwise, and this runs it on a plain
subprocess (no nsjail, no Docker), so every guarantee comes from the kernel:

- Resource limits (setrlimit, in the child before exec): CPU seconds, address space,
  open files, file size, no core dumps, and processes+threads. RLIMIT_NPROC counts all
  processes *of a uid* and is not enforced for root, so as root every sandbox runs as
  a uid of its own ("slot"), claimed exclusively across all processes of the host by an
  flock'ed file (the kernel drops the lock when its holder dies, however it dies).
- Network: its own network namespace (only a downed `lo`), where the kernel lets us
  create one. Which isolation a child really got is read back from /proc, not assumed.
- Kills reach everything: the child is a session leader (its own process group), and as
  root everything running under the slot uid is killed by a helper that runs as that
  uid and calls kill(-1), which the kernel applies to all of them at once, so a fork
  bomb cannot outrun it the way it outruns a tree walk. A new claim of a slot first
  kills what a dead previous holder left. The claiming process becomes a child
  subreaper, so orphans come back to it and are reaped at once (no zombies).
- Files: the slot uid can write only its working directory and the world-writable
  temp directories; entries it left in those are removed with the slot.

Without root there is no uid to switch to: the child runs as the current user, the
process limit is not applied (it would count the user's other processes), and the
recorded isolation says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from common.config import Settings
from common.protocol import MAX_OUTPUT_BYTES

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before fork: preexec only calls it
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_MB = 1 << 20
SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
FALLBACK_PYTHON = "/usr/bin/python3"
# What `deploy/setup.sh` builds beside the checkout: the system Python, which slot uids can run, with the
# data-science stack agents' code reaches for. The default interpreter when it exists.
SANDBOX_VENV_PYTHON = str(Path(__file__).resolve().parents[1] / ".venv-sandbox" / "bin" / "python")
KILL_DEADLINE_S = 5.0
KILL = shutil.which("kill", path="/usr/bin:/bin") or "/bin/kill"


class SandboxError(Exception):
    """The sandbox cannot be set up as configured: a deployment problem, not the program's."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandbox and where its slots live (see the EAGER_SANDBOX_* settings)."""

    cpu_s: int = 300
    memory_mb: int = 4096
    processes: int = 128
    open_files: int = 512
    file_size_mb: int = 256
    output_bytes: int = MAX_OUTPUT_BYTES
    uid_base: int = 20001
    slots: int = 64
    slot_dir: str = "/run/eager-slots"

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        return cls(cpu_s=settings.sandbox_cpu_s, memory_mb=settings.sandbox_memory_mb,
                   processes=settings.sandbox_processes, open_files=settings.sandbox_open_files,
                   file_size_mb=settings.sandbox_file_size_mb, output_bytes=settings.sandbox_output_bytes,
                   uid_base=settings.sandbox_uid_base, slots=settings.sandbox_slots,
                   slot_dir=settings.sandbox_slot_dir)


def _may(st: os.stat_result, uid: int, want: int) -> bool:
    """Would `uid` (whose only group is gid == uid) get the `want` rwx bits on this inode?"""
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == uid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def blocked_at(path: str, uid: int, want: int) -> str | None:
    """The first component of `path` (as written and with symlinks resolved) that `uid`
    cannot pass, or None when it can reach the file with the `want` bits."""
    wanted = os.path.abspath(path)
    real = os.path.realpath(wanted)
    try:
        for target in (wanted, real):
            for directory in reversed(Path(target).parents):
                if not _may(os.stat(directory), uid, 1):
                    return str(directory)
        if not _may(os.stat(real), uid, want):
            return real
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    return None


def _secure_dir(path: str) -> None:
    """Make `path` a directory only we may write: slot locks and runner copies live there,
    and a sandboxed program must not be able to plant or hold them."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SandboxError(f"{path} must be a directory owned by uid {os.geteuid()} and writable only by it")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    zombie: bool


def processes_of(uid: int) -> list[Proc]:
    """Every process whose real uid is `uid`, zombies included. Read from /proc directly,
    not with psutil.process_iter: that reuses cached Process objects whose locks a pool
    thread may hold at the moment a work horse forks, which deadlocks the horse."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            if int(fields[b"Uid"].split()[0]) != uid:
                continue
            found.append(Proc(int(name), int(fields[b"PPid"]), fields[b"State"].split()[0] == b"Z"))
        except (OSError, KeyError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def living(uid: int) -> list[Proc]:
    """Processes of `uid` that are not zombies."""
    return [p for p in processes_of(uid) if not p.zombie]


class Sandbox:
    """One sandbox slot: its uid (None when not root), its lock and its working directory.

    Lifecycle: `claim()` -> `workdir()` and `preexec()` for the child -> `kill(proc)` any
    number of times -> `release()`.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.uid: int | None = None
        self._lock_fd = -1
        self._workdir: str | None = None
        self._owner = os.getpid()

    @classmethod
    def claim(cls, config: SandboxConfig) -> Sandbox:
        """Take the first free slot uid on this host (as root), after killing whatever a
        previous holder that died without cleanup left running under it."""
        box = cls(config)
        if os.geteuid() != 0:
            return box
        _secure_dir(config.slot_dir)
        _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        for uid in range(config.uid_base, config.uid_base + config.slots):
            fd = os.open(os.path.join(config.slot_dir, f"slot-{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            box.uid, box._lock_fd = uid, fd
            box._kill_uid()
            box._sweep_shared_tmp()
            return box
        raise SandboxError(f"all {config.slots} sandbox slots (uids {config.uid_base}..) are in use on this host")

    # -- what the child needs -----------------------------------------------------------

    def workdir(self) -> str:
        """A fresh private directory, owned by the slot uid so the program may write there."""
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="eager-")
            if self.uid is not None:
                os.chown(self._workdir, self.uid, self.uid)
        return self._workdir

    def python(self, configured: str) -> str:
        """The interpreter to exec: `configured`, or (when empty) the first the slot user may run of the
        checkout's .venv-sandbox, the executor's own Python and /usr/bin/python3. Refuses a configured one
        the slot user cannot run."""
        if configured:
            reason = self._unusable(configured)
            if reason:
                raise SandboxError(
                    f"EAGER_INTERPRETER_PYTHON={configured} cannot be run by sandbox uid {self.uid}: {reason}; "
                    f"use a Python outside private directories (for example {FALLBACK_PYTHON})")
            return configured
        for candidate in (SANDBOX_VENV_PYTHON, sys.executable, FALLBACK_PYTHON):
            if candidate and not self._unusable(candidate):
                return candidate
        raise SandboxError(f"no Python the sandbox uid {self.uid} can run: set EAGER_INTERPRETER_PYTHON")

    def _unusable(self, python: str) -> str | None:
        if not os.path.isfile(python) or not os.access(python, os.X_OK):
            return "not an executable file"
        if self.uid is None:
            return None
        where = blocked_at(python, self.uid, 5)
        return None if where is None else f"{where} is not accessible to it"

    def runner(self, path: Path) -> str:
        """A path of the runner script the slot user can read: the file itself, or a copy
        in the slot directory when the checkout is private."""
        if self.uid is None or blocked_at(str(path), self.uid, 4) is None:
            return str(path)
        data = path.read_bytes()
        copy = os.path.join(self.config.slot_dir, f"runner-{hashlib.sha256(data).hexdigest()[:16]}.py")
        if not os.path.exists(copy):
            tmp = f"{copy}.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, copy)
        return copy

    def preexec(self) -> Callable[[], None]:
        """The Popen `preexec_fn` (run with start_new_session=True): limits, the network
        namespace, the slot uid, and last the parent-death signal (a uid change clears it)."""
        cfg, uid, parent = self.config, self.uid, os.getpid()
        limits = [
            (resource.RLIMIT_CPU, cfg.cpu_s, cfg.cpu_s + 1),  # SIGXCPU at the soft limit, SIGKILL a second later
            (resource.RLIMIT_AS, cfg.memory_mb * _MB, cfg.memory_mb * _MB),
            (resource.RLIMIT_NOFILE, cfg.open_files, cfg.open_files),
            (resource.RLIMIT_FSIZE, cfg.file_size_mb * _MB, cfg.file_size_mb * _MB),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        if uid is not None:
            limits.append((resource.RLIMIT_NPROC, cfg.processes, cfg.processes))

        def preexec() -> None:
            for which, soft, hard in limits:
                if uid is None:  # unprivileged: only lowering is allowed
                    _, current = resource.getrlimit(which)
                    if current != resource.RLIM_INFINITY:
                        soft, hard = min(soft, current), min(hard, current)
                resource.setrlimit(which, (soft, hard))
            _LIBC.unshare(_CLONE_NEWNET)  # may fail without privilege: isolation() reports what we got
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

        return preexec

    def isolation(self, pid: int) -> str:
        """What the running child really got: "netns" (own network namespace) and/or "uid"
        (its slot uid), joined by "+", or "none"."""
        got = []
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                got.append("netns")
        except OSError:
            pass
        if self.uid is not None:
            try:
                if psutil.Process(pid).uids().real == self.uid:
                    got.append("uid")
            except psutil.Error:
                pass
        return "+".join(got) or "none"

    # -- ending it ----------------------------------------------------------------------

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the child, its process group and (as root) everything of the slot uid,
        then reap what came back to us. Never raises for processes already gone."""
        tree = _stop_tree(proc.pid) if self.uid is None and (proc.returncode is None or not self.owner) else []
        try:
            # Safe even after the child was reaped: a member of the group keeps its id in use.
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in tree:
            try:
                p.kill()  # psutil checks the pid was not reused since it was found
            except psutil.Error:
                pass
        if self.owner:
            proc.kill()  # a no-op once reaped: the pid may belong to someone else by then
            proc.wait()
        else:
            # A forked copy (a work horse handed a warm interpreter) cannot reap the child, and
            # Popen there believes it dead; the owner reaps it, so until then its pid is ours.
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.uid is not None:
            self._kill_uid()
        else:
            _reap([p.pid for p in tree])

    @property
    def owner(self) -> bool:
        """Whether this is the process that claimed the slot and started the child."""
        return os.getpid() == self._owner

    def _kill_uid(self) -> None:
        """kill(-1) as the slot uid until nothing of it lives, then reap its zombies.
        kill(-1) hits every process its caller may signal: never let it run as root or us."""
        assert self.uid is not None and self.uid not in (0, os.geteuid())
        deadline = time.monotonic() + KILL_DEADLINE_S
        while living(self.uid) and time.monotonic() < deadline:
            subprocess.run([KILL, "-s", "KILL", "--", "-1"], user=self.uid, group=self.uid, extra_groups=[],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={"PATH": "/usr/bin:/bin"}, check=False)
        _reap([p.pid for p in processes_of(self.uid)])

    def _sweep_shared_tmp(self) -> None:
        """Remove what the slot uid left in the world-writable temp directories."""
        assert self.uid is not None
        for directory in SHARED_TMP_DIRS:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != self.uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    pass

    def release(self) -> None:
        """Kill leftovers, remove the working directory and the slot's files, free the slot.
        Idempotent; only the claiming process frees the slot (a forked copy must not)."""
        if self.uid is not None and self._lock_fd >= 0 and self.owner:
            self._kill_uid()
            self._sweep_shared_tmp()
        if self._workdir is not None:
            remove_tree(self._workdir)
            self._workdir = None
        if self._lock_fd >= 0:
            if self.owner:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1


def _stop_tree(pid: int) -> list[psutil.Process]:
    """Without a slot uid: the child's descendants, found while it still exists (once it
    dies they are re-parented out of reach) and stopped so they cannot fork meanwhile."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        for _ in range(5):
            new = [p for p in root.children(recursive=True) if p.pid not in found]
            if not new:
                break
            for p in new:
                found[p.pid] = p
                try:
                    p.send_signal(signal.SIGSTOP)
                except psutil.Error:
                    pass
    except psutil.Error:
        pass
    return list(found.values())


def _reap(pids: list[int]) -> None:
    """Wait for those that came back to us (we are a subreaper) so no zombie stays."""
    me = os.getpid()
    deadline = time.monotonic() + 1.0
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        still = []
        for pid in pending:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                state, ppid = fields[0], int(fields[1])
                if ppid == me:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        still.append(pid)
                elif state != b"Z":
                    still.append(pid)  # still dying
            except (OSError, ChildProcessError, ValueError, IndexError):
                pass  # gone
        pending = still
        if pending:
            time.sleep(0.002)


def remove_tree(path: str) -> None:
    """rmtree that also removes what the program made unwritable (chmod 0 on its own dirs)."""
    def make_writable_and_retry(func: Callable[[str], object], target: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if os.path.isdir(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)
