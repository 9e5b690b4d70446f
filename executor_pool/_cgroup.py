"""One control group per sandbox slot: limits for the whole process tree, and a kill of all of it.

rlimits bound each process; a program that forks spreads its memory over many of them.
A cgroup bounds the tree: one memory limit (the kernel's OOM killer acts inside it), one
process+thread count, CPU accounting, and a kill that reaches every member at once, so no
fork can outrun it. cgroup v2 where the host runs it (`cgroup.kill`); else the v1
hierarchies `memory`, `pids`, `freezer` and `cpuacct` (freeze, kill, thaw: a frozen task
cannot fork while it is being killed).

The slot's group lives below the executor's own group in each hierarchy, named after the
slot uid, so a new claim of a slot finds (and kills) what a crashed holder left in it.
The child joins it itself in its preexec function, before exec: nothing of the program
ever runs outside it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

V1_CONTROLLERS = ("memory", "pids", "freezer", "cpuacct")
V2_CONTROLLERS = ("memory", "pids")
KILL_DEADLINE_S = 5.0


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup file system."""
    found = []
    for line in _read("/proc/self/mounts").splitlines():
        _dev, where, kind, options, *_ = line.split()
        if kind in ("cgroup", "cgroup2"):
            found.append((where, kind, set(options.split(","))))
    return found


def _paths_of(pid: int | str = "self") -> dict[str, str]:
    """A process's group per v1 controller, and under "" its v2 group."""
    paths = {}
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _id, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


@dataclass(frozen=True)
class Cgroup:
    """The slot's group: one directory per hierarchy (v1) or one directory (v2)."""

    version: int
    dirs: dict[str, str]  # controller (v1) or "" (v2) -> directory
    paths: dict[str, str]  # the same -> the group as /proc/<pid>/cgroup names it

    @classmethod
    def create(cls, name: str, memory_bytes: int, pids: int) -> Cgroup:
        """The group `name` below ours, emptied of any leftovers, with its limits set.
        Raises OSError when the host has no usable hierarchy or we may not write it."""
        own, mounts = _paths_of(), _mounts()
        v1 = {}
        for controller in V1_CONTROLLERS:
            where = next((m for m, kind, opts in mounts if kind == "cgroup" and controller in opts), None)
            if where is not None and controller in own:
                v1[controller] = os.path.join(where + own[controller], name)
        if len(v1) == len(V1_CONTROLLERS):
            group = cls(1, v1, {c: os.path.join(own[c], name) for c in v1})
        else:
            where = next((m for m, kind, _ in mounts if kind == "cgroup2"), None)
            if where is None or "" not in own:
                raise OSError(f"no cgroup hierarchy for {', '.join(V1_CONTROLLERS)} (v1) nor a cgroup2 mount")
            parent = where + own[""]
            missing = set(V2_CONTROLLERS) - set(_read(os.path.join(parent, "cgroup.controllers")).split())
            if missing:
                raise OSError(f"cgroup v2 at {parent} does not delegate {', '.join(sorted(missing))}")
            _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in V2_CONTROLLERS))
            group = cls(2, {"": os.path.join(parent, name)}, {"": os.path.join(own[""], name)})
        for directory in group.dirs.values():
            os.makedirs(directory, exist_ok=True)
        group.kill()
        group._limit(memory_bytes, pids)
        return group

    def _limit(self, memory_bytes: int, pids: int) -> None:
        if self.version == 2:
            _write(self._file("", "memory.max"), str(memory_bytes))
            if os.path.exists(self._file("", "memory.swap.max")):  # absent without swap accounting
                _write(self._file("", "memory.swap.max"), "0")
            _write(self._file("", "pids.max"), str(pids))
            return
        swap = self._file("memory", "memory.memsw.limit_in_bytes")
        has_swap = os.path.exists(swap)
        if has_swap:
            _write(swap, "-1")  # memory+swap may never be below memory: lift it first (a reused group's may be)
        _write(self._file("memory", "memory.limit_in_bytes"), str(memory_bytes))
        if has_swap:
            _write(swap, str(memory_bytes))
        _write(self._file("pids", "pids.max"), str(pids))

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs[controller], name)

    def join(self) -> None:
        """Move the calling process into the group (from a child's preexec: "0" is the caller
        in any pid namespace)."""
        for directory in self.dirs.values():
            _write(os.path.join(directory, "cgroup.procs"), "0")

    def contains(self, pid: int) -> bool:
        """Whether `pid` (of our pid namespace) is in the group, in every hierarchy."""
        try:
            theirs = _paths_of(pid)
        except OSError:
            return False
        return all(theirs.get(controller) == path for controller, path in self.paths.items())

    def members(self) -> list[int]:
        """Pids in the group (of our pid namespace)."""
        directory = self.dirs["freezer" if self.version == 1 else ""]
        try:
            return [int(pid) for pid in _read(os.path.join(directory, "cgroup.procs")).split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every member at once and wait until none is left. Never raises."""
        deadline = time.monotonic() + KILL_DEADLINE_S
        try:
            if self.version == 2:
                if self.members():
                    _write(self._file("", "cgroup.kill"), "1")
            else:
                while self.members() and time.monotonic() < deadline:
                    self._kill_frozen(deadline)
        except OSError:
            pass
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _kill_frozen(self, deadline: float) -> None:
        state = self._file("freezer", "freezer.state")
        _write(state, "FROZEN")
        while _read(state).strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.001)
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _write(state, "THAWED")

    def cpu_seconds(self) -> float:
        """CPU time the whole tree used so far."""
        if self.version == 2:
            stat = dict(line.split() for line in _read(self._file("", "cpu.stat")).splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the group's memory limit."""
        path = self._file("", "memory.events") if self.version == 2 else self._file("memory", "memory.oom_control")
        try:
            fields = dict(line.split() for line in _read(path).splitlines())
        except OSError:
            return 0
        return int(fields.get("oom_kill", 0))

    def remove(self) -> None:
        """Kill what is left and remove the group. Never raises: a group that cannot be
        removed now is emptied and reused by the slot's next claim."""
        self.kill()
        for directory in self.dirs.values():
            try:
                os.rmdir(directory)
            except OSError:
                pass
