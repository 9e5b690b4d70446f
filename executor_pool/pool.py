"""Warm interpreters: started before a session asks, so no session waits for one.

Each executor keeps `size` started interpreters. RQ's forking worker runs every job in a
fresh work horse, so the worker (the parent) takes one from the pool just before it
forks, the horse inherits it with the fork (`handed_off`), and the parent closes it once
the horse is gone, whatever happened to the horse. One long-lived thread starts the
replacements, because the kernel's parent-death signal binds a child to the *thread*
that forked it: a short-lived thread would take its interpreters with it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable

from eager.common.config import Settings
from eager.executor_pool.interpreter import Interpreter, InterpreterError
from eager.executor_pool.sandbox import SandboxConfig

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed start, before the next attempt
REFILL_NICE = 10

_handed: Interpreter | None = None


def hand_off(interpreter: Interpreter | None) -> None:
    """Set the interpreter the next forked work horse finds (None: it starts its own)."""
    global _handed
    _handed = interpreter


def handed_off() -> Interpreter | None:
    """In the work horse: the warm interpreter the worker took for this job, once."""
    global _handed
    interpreter, _handed = _handed, None
    return interpreter


def new_interpreter(settings: Settings, warm: bool = False) -> Interpreter:
    """An interpreter as every session gets one (not started yet); a `warm` one, started before a session
    asks, preloads `EAGER_PRELOAD` while it waits."""
    preload = tuple(name.strip() for name in settings.preload.split(",") if name.strip()) if warm else ()
    return Interpreter(python=settings.interpreter_python, sandbox=SandboxConfig.from_settings(settings),
                       preload=preload)


def _start_niced() -> bool:
    """Start replacements at low CPU priority, so a running session keeps its CPU.

    Children inherit the forking thread's nice value; a ready interpreter is set back
    to normal, which needs privilege (CAP_SYS_NICE): without it, nothing is niced.
    Returns whether ready interpreters must be set back.
    """
    if os.geteuid() != 0:
        return False
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFILL_NICE)
    return True


class InterpreterPool:
    def __init__(self, size: int, factory: Callable[[], Interpreter]) -> None:
        self.size = size
        self._factory = factory
        self._ready: deque[Interpreter] = deque()
        self._retired: list[Interpreter] = []
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._refill, name="eager-interpreter-pool", daemon=True)

    def start(self) -> InterpreterPool:
        if self.size > 0:
            self._thread.start()
        return self

    def take(self) -> Interpreter | None:
        """A started, living interpreter, or None when none is ready (the caller starts one)."""
        taken = None
        with self._lock:
            while self._ready and taken is None:
                candidate = self._ready.popleft()
                if candidate.alive:
                    taken = candidate
                else:
                    candidate.close()
        self._wake.set()
        return taken

    def retire(self, interpreter: Interpreter) -> None:
        """Close a used interpreter in the background, so the next job is not kept waiting."""
        with self._lock:
            self._retired.append(interpreter)
        self._wake.set()

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def wait_filled(self, timeout: float) -> bool:
        """Block until `size` interpreters wait (for a worker that must not start cold, and tests)."""
        with self._filled:
            return self._filled.wait_for(lambda: len(self._ready) >= self.size, timeout)

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._close_retired()
        with self._lock:
            while self._ready:
                self._ready.popleft().close()

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for interpreter in retired:
            interpreter.close()

    def _refill(self) -> None:
        restore = _start_niced()
        while not self._stopped:
            self._close_retired()
            if self.ready() >= self.size:
                self._wake.wait()
                self._wake.clear()
                continue
            interpreter = self._factory()
            try:
                interpreter.start()
            except (InterpreterError, OSError):
                log.exception("a warm interpreter failed to start; retrying in %.1f s", RETRY_S)
                self._wake.wait(RETRY_S)
                continue
            if restore and interpreter.pid is not None:
                os.setpriority(os.PRIO_PROCESS, interpreter.pid, 0)
            with self._lock:
                if self._stopped:
                    interpreter.close()
                else:
                    self._ready.append(interpreter)
                    self._filled.notify_all()
