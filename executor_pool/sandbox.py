"""The sandbox around one interpreter: a jail built from the kernel's own primitives.

Model-written code is hostile until proven otherwise, and this runs it on a plain
subprocess (no nsjail, no Docker, no containers), so every guarantee comes from the kernel,
set up from Python (ctypes for the calls `os` lacks). Each layer, in the order the child
takes them between fork and exec (`preexec`):

- rlimits: CPU seconds, address space, open files, file size, no core dumps, and (per uid)
  processes+threads.
- cgroup (`_cgroup`): the child joins its slot's group, whose limits bound the whole tree:
  memory, processes+threads, CPU accounting, and one kill for every member.
- pidns: the child is the init of a new pid namespace (the executor's forking thread enters
  it for the one fork): when the interpreter dies, the kernel kills every process of the
  session, however it forked, stopped itself or hid.
- mntns, ipcns, utsns, netns: its own mount table (a minimal read-only root, `_mounts`),
  its own System V IPC objects (gone with it), its own host name, and no network at all.
- uid: as root every sandbox runs as a uid of its own ("slot"), claimed exclusively across
  all processes of the host by an flock'ed file (the kernel drops the lock when its holder
  dies, however it dies). The parent-death signal follows (a uid change clears it).
- signals: every disposition back to the default and an empty mask (a work horse ignores
  SIGINT, and an ignored signal survives exec).
- seccomp (`_seccomp`): no_new_privs and a deny-list filter, last, so the program's first
  line already runs under it.

Which layers the host allows is planned before the fork; `EAGER_SANDBOX_ISOLATION` decides
what happens when one is missing (`require`: refuse to run code; `best-effort`: run with
the rest), and which layers a child really got is read back from /proc, not assumed.

Without the jail (no CAP_SYS_ADMIN) the old guarantees remain: the child is a session
leader, as root a helper running as the slot uid calls kill(-1) on everything of it, and
the slot's leftovers in the shared temp directories are removed. Without root there is no
uid to switch to: the child runs as the current user, without the process limit (it would
count the user's other processes).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import resource
import select
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
from typing import Any

import psutil

from eager.common.config import Settings
from eager.common.protocol import MAX_OUTPUT_BYTES
from eager.executor_pool import _mounts, _seccomp
from eager.common.errors import EagerError
from eager.executor_pool._cgroup import Cgroup
from eager.executor_pool._syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    PR_GET_SECCOMP,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    prctl,
    prctl_value,
    sethostname,
    setns,
    unshare,
)

_MB = 1 << 20
_CAP_SYS_ADMIN = 21
NAMESPACES = {"pidns": "pid", "mntns": "mnt", "ipcns": "ipc", "utsns": "uts", "netns": "net"}
LAYERS = (*NAMESPACES, "cgroup", "seccomp", "uid")
REQUIRE, BEST_EFFORT = "require", "best-effort"
SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
FALLBACK_PYTHON = "/usr/bin/python3"
# What `deploy/setup.sh` builds beside the checkout: the system Python, which slot uids can run, with the
# data-science stack agents' code reaches for. The default interpreter when it exists.
SANDBOX_VENV_PYTHON = str(Path(__file__).resolve().parents[1] / ".venv-sandbox" / "bin" / "python")
KILL_DEADLINE_S = 5.0
KILL = shutil.which("kill", path="/usr/bin:/bin") or "/bin/kill"


class SandboxError(EagerError):
    """The sandbox cannot be set up as configured: a deployment problem, not the program's."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandbox and where its slots live (see the EAGER_SANDBOX_* settings)."""

    cpu_s: int = 300
    memory_mb: int = 4096
    processes: int = 128
    open_files: int = 512
    file_size_mb: int = 256
    disk_mb: int = 1024
    output_bytes: int = MAX_OUTPUT_BYTES
    uid_base: int = 20001
    slots: int = 64
    slot_dir: str = "/run/eager-slots"
    isolation: str = ""  # REQUIRE, BEST_EFFORT, or empty: REQUIRE as root, else BEST_EFFORT

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        return cls(cpu_s=settings.sandbox_cpu_s, memory_mb=settings.sandbox_memory_mb,
                   processes=settings.sandbox_processes, open_files=settings.sandbox_open_files,
                   file_size_mb=settings.sandbox_file_size_mb, disk_mb=settings.sandbox_disk_mb,
                   output_bytes=settings.sandbox_output_bytes, uid_base=settings.sandbox_uid_base,
                   slots=settings.sandbox_slots, slot_dir=settings.sandbox_slot_dir,
                   isolation=settings.sandbox_isolation)

    @property
    def policy(self) -> str:
        """What to do when the host does not allow a layer."""
        policy = self.isolation or (REQUIRE if os.geteuid() == 0 else BEST_EFFORT)
        if policy not in (REQUIRE, BEST_EFFORT):
            raise SandboxError(f"EAGER_SANDBOX_ISOLATION={policy!r}: expected {REQUIRE} or {BEST_EFFORT}")
        return policy


def _may(st: os.stat_result, uid: int, want: int) -> bool:
    """Would `uid` (whose only group is gid == uid) get the `want` rwx bits on this inode?"""
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == uid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def blocked_at(path: str, uid: int, want: int, made: Callable[[str], bool] = lambda _d: False) -> str | None:
    """The first component of `path` (as written and with symlinks resolved) that `uid`
    cannot pass, or None when it can reach the file with the `want` bits. Directories
    for which `made` is true are passable whatever their host modes: the jail makes them."""
    wanted = os.path.abspath(path)
    real = os.path.realpath(wanted)
    try:
        for target in (wanted, real):
            for directory in reversed(Path(target).parents):
                if not made(str(directory)) and not _may(os.stat(directory), uid, 1):
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


def _has_capability(number: int) -> bool:
    with open("/proc/self/status") as f:
        caps = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> number & 1)


def _default_signals() -> None:
    """Every signal back to its default action, none blocked: what a fresh process expects."""
    for number in signal.valid_signals():
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(number, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # reserved by the C library
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Sandbox:
    """One sandbox slot: its uid (None when not root), its lock, its cgroup and the layers
    planned for its child.

    Lifecycle: `claim()` -> `python()`, `workdir()`, `spawn()` -> `isolation()` ->
    `kill(proc)` any number of times -> `release()`.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.uid: int | None = None
        self.layers: tuple[str, ...] = ()
        self.missing: dict[str, str] = {}  # layer -> why the host does not allow it
        self._cgroup: Cgroup | None = None
        self._lock_fd = -1
        self._workdir: str | None = None
        self._owner = os.getpid()

    @classmethod
    def claim(cls, config: SandboxConfig) -> Sandbox:
        """Take the first free slot uid on this host (as root), after killing whatever a
        previous holder that died without cleanup left running under it, and plan the
        layers. Under `require`, a host that does not allow every layer is refused here."""
        box = cls(config)
        policy = config.policy
        if os.geteuid() == 0:
            box._claim_slot()
        try:
            box._plan()
        except BaseException:
            box.release()
            raise
        if box.missing and policy == REQUIRE:
            box.release()
            raise SandboxError("EAGER_SANDBOX_ISOLATION=require, and this host does not allow "
                               + "; ".join(f"{layer} ({why})" for layer, why in box.missing.items()))
        return box

    def _claim_slot(self) -> None:
        config = self.config
        _secure_dir(config.slot_dir)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        for uid in range(config.uid_base, config.uid_base + config.slots):
            fd = os.open(os.path.join(config.slot_dir, f"slot-{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._lock_fd = uid, fd
            self._kill_uid()
            self._sweep_shared_tmp()
            return
        raise SandboxError(f"all {config.slots} sandbox slots (uids {config.uid_base}..) are in use on this host")

    def _plan(self) -> None:
        """Which layers this host allows, each with the reason when it does not."""
        missing = {}
        if self.uid is None:
            missing.update({layer: "needs root" for layer in (*NAMESPACES, "cgroup", "uid")})
        else:
            if not _has_capability(_CAP_SYS_ADMIN):
                missing.update({layer: "needs CAP_SYS_ADMIN" for layer in NAMESPACES})
            try:
                self._cgroup = Cgroup.create(f"eager-slot-{self.uid}", self.config.memory_mb * _MB, self.config.processes)
            except OSError as exc:
                missing["cgroup"] = str(exc)
        if not _seccomp.SUPPORTED or prctl_value(PR_GET_SECCOMP) < 0:
            missing["seccomp"] = f"no filter for {os.uname().machine} or no seccomp in this kernel"
        self.missing = missing
        self.layers = tuple(layer for layer in LAYERS if layer not in missing)

    @property
    def jailed(self) -> bool:
        """Whether the child gets its own root file system (and with it every namespace)."""
        return "mntns" in self.layers

    # -- what the child needs -----------------------------------------------------------

    def workdir(self) -> str:
        """The program's working directory as the program sees it: the jail's private tmpfs,
        or without a jail a fresh private directory owned by the slot uid."""
        if self.jailed:
            return _mounts.WORKDIR
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="eager-")
            if self.uid is not None:
                os.chown(self._workdir, self.uid, self.uid)
        return self._workdir

    def host_view(self, pid: int) -> str:
        """The working directory of child `pid` as the executor reaches it."""
        return f"/proc/{pid}/root{_mounts.WORKDIR}" if self.jailed else self.workdir()

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
        made: Callable[[str], bool] = lambda _d: False
        if self.jailed:
            try:
                binds = _mounts.binds_for(python)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                return f"it does not run ({exc})"
            made = lambda directory: _mounts.made_by_jail(binds, directory)  # noqa: E731
        where = blocked_at(python, self.uid, 5, made)
        return None if where is None else f"{where} is not accessible to it"

    def runner(self, path: Path) -> str:
        """Without a jail: a path of the runner script the slot user can read, the file
        itself or a copy in the slot directory when the checkout is private."""
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

    def spawn(self, python: str, script: Path, args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start `python -I -u script args` in the sandbox; `popen` carries Popen's stdio,
        env and pass_fds. The calling thread is the child's parent for its death signal."""
        plan = None
        if self.jailed:
            assert self.uid is not None
            plan = _mounts.RootPlan.for_interpreter(python, script.read_bytes(), self.uid, self.config.disk_mb * _MB)
            argv, cwd = [python, "-I", "-u", _mounts.RUNNER, *args], None
        else:
            argv, cwd = [python, "-I", "-u", self.runner(script), *args], self.workdir()
        parent = os.pidfd_open(os.getpid())
        try:
            own_pid_ns = self._enter_pid_namespace()
            try:
                return subprocess.Popen(argv, cwd=cwd, start_new_session=True,
                                        preexec_fn=self._preexec(parent, plan), **popen)
            finally:
                if own_pid_ns >= 0:
                    setns(own_pid_ns, CLONE_NEWPID)
                    os.close(own_pid_ns)
        finally:
            os.close(parent)

    def _enter_pid_namespace(self) -> int:
        """Make this thread's next child the init of a new pid namespace; returns a handle
        on the thread's own one (to go back with setns), or -1 without that layer."""
        if "pidns" not in self.layers:
            return -1
        own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            unshare(CLONE_NEWPID)
        except OSError:
            os.close(own)
            raise
        return own

    def _preexec(self, parent: int, plan: _mounts.RootPlan | None) -> Callable[[], None]:
        """The Popen `preexec_fn` (run with start_new_session=True), every layer in order."""
        cfg, uid, group, layers = self.config, self.uid, self._cgroup, self.layers
        staging = os.path.join(cfg.slot_dir, "jail")
        if plan is not None:
            os.makedirs(staging, mode=0o755, exist_ok=True)
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
            if group is not None:
                group.join()
            if plan is not None:
                unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)
                sethostname(_mounts.HOSTNAME)
                _mounts.enter(plan, staging)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([parent], [], [], 0)[0]:
                os._exit(1)  # the parent died before its death signal was armed
            _default_signals()
            if "seccomp" in layers:
                _seccomp.install()

        return preexec

    def isolation(self, pid: int) -> str:
        """The layers the running child really got, read back from /proc, joined by "+"
        (in the order of LAYERS), or "none". Under `require`, a planned layer the child
        lacks is a SandboxError."""
        got = []
        for layer, ns in NAMESPACES.items():
            try:
                if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                    got.append(layer)
            except OSError:
                pass
        if self._cgroup is not None and self._cgroup.contains(pid):
            got.append("cgroup")
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            status = {}
        if status.get("Seccomp", "").strip() == "2":  # a filter
            got.append("seccomp")
        if self.uid is not None and status.get("Uid", "").split()[:1] == [str(self.uid)]:  # the real uid
            got.append("uid")
        lacking = [layer for layer in self.layers if layer not in got]
        if lacking and self.config.policy == REQUIRE:
            raise SandboxError(f"EAGER_SANDBOX_ISOLATION=require, and the interpreter lacks {'+'.join(lacking)}")
        return "+".join(got) or "none"

    def exceeded(self, status: int | None) -> str | None:
        """Which limit of the sandbox killed the child that exited with `status`, if one did.
        The child is the init of its pid namespace, so the kernel's SIGXCPU at the soft CPU
        limit does not stop it: the SIGKILL at the hard limit does, as the OOM killer's does."""
        group = self._cgroup
        if status == -signal.SIGKILL and group is not None:
            if group.oom_kills():
                return f"memory limit of {self.config.memory_mb} MB for the whole sandbox exceeded"
            if group.cpu_seconds() >= self.config.cpu_s:
                return f"CPU time limit of {self.config.cpu_s} s exceeded"
        if status == -signal.SIGXCPU:
            return f"CPU time limit of {self.config.cpu_s} s exceeded"
        return None

    # -- ending it ----------------------------------------------------------------------

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the child and everything of its sandbox, then reap what came back to us.
        Never raises for processes already gone."""
        if "pidns" in self.layers:
            if self._cgroup is not None:
                self._cgroup.kill()  # all at once; the child's death alone would take the rest with it
            self._kill_child(proc)
            return
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
        self._kill_child(proc)
        if self.uid is not None:
            self._kill_uid()
        else:
            _reap([p.pid for p in tree])

    def _kill_child(self, proc: subprocess.Popen[bytes]) -> None:
        if self.owner:
            proc.kill()  # a no-op once reaped: the pid may belong to someone else by then
            proc.wait()
            return
        # A forked copy (a work horse handed a warm interpreter) cannot reap the child, and
        # Popen there believes it dead; the owner reaps it, so until then its pid is ours.
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

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
        """Remove what the slot uid left in the host's world-writable temp directories
        (reachable only by a child without the jail's own root)."""
        assert self.uid is not None
        for directory in SHARED_TMP_DIRS:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid == self.uid:
                        remove_tree(entry.path)
                except OSError:
                    pass

    def release(self) -> None:
        """Kill leftovers, remove the working directory, the cgroup and the slot's files,
        free the slot. Idempotent; only the claiming process frees the slot (a forked copy
        must not). Never raises for what the program left."""
        if self.owner:
            if self.uid is not None and self._lock_fd >= 0:
                self._kill_uid()
                self._sweep_shared_tmp()
            if self._cgroup is not None:
                self._cgroup.remove()
                self._cgroup = None
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
    """Remove `path` and everything below it, however deep, however many entries, whatever
    modes the program set. Never raises: what cannot be removed stays.

    Not shutil.rmtree: it recurses (a 10,000-level tree is a RecursionError) and joins
    path names (past PATH_MAX they fail). This walks down with one directory descriptor at
    a time, opened relative to the previous one, and back up through "..".
    """
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        _empty_tree(top)
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _empty_tree(top: int) -> None:
    """Remove everything below the directory `top` (a descriptor the caller keeps)."""
    names: list[str] = []  # the path from `top` down to `here`
    stuck: set[int] = set()  # inodes of directories that could not be emptied: not entered again
    here = top
    while True:
        descended = False
        try:
            entries = list(os.scandir(here))
        except OSError:
            entries = []
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=here)
                    continue
                if entry.inode() in stuck:
                    continue
                os.chmod(entry.name, 0o700, dir_fd=here)  # a directory (not followed above): the program is dead
                os.rmdir(entry.name, dir_fd=here)
            except OSError:
                try:
                    below = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
                except OSError:
                    continue  # cannot enter it: it stays
                if names:
                    os.close(here)  # never `top`: the caller's
                names.append(entry.name)
                here, descended = below, True
                break
        if descended:
            continue
        if not names:
            return
        try:
            parent = top if len(names) == 1 else os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            inode = os.fstat(here).st_ino
        except OSError:
            os.close(here)
            return
        os.close(here)
        here = parent
        try:
            os.rmdir(names.pop(), dir_fd=here)
        except OSError:
            stuck.add(inode)  # something in it could not be removed
