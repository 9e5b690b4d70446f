"""Helpers for tests that build answers and run programs the serial way."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eager.common.protocol import Message, Summary
from eager.client import Session
from eager.executor_pool.sandbox import FALLBACK_PYTHON, SANDBOX_VENV_PYTHON

# The interpreter the sandbox runs by default (as root, a slot uid cannot reach a Python under /root).
if os.path.exists(SANDBOX_VENV_PYTHON):
    PYTHON = SANDBOX_VENV_PYTHON
else:
    PYTHON = FALLBACK_PYTHON if os.geteuid() == 0 else sys.executable
UNSHOWN = "(an error python did not show)"
T = TypeVar("T")


def eventually(condition: Callable[[], T], what: str, within_s: float = 10.0, every_s: float = 0.02) -> T:
    """The first true value `condition` returns, polled every `every_s`; the test fails after `within_s`.

    For what nothing signals to a test: a key's expiry or deletion (keyspace notifications are off by default),
    a counter on a scrape, a server starting to answer. An exception `condition` raises ends the wait at once.
    """
    deadline = time.monotonic() + within_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {within_s:g} s: {what}"
        time.sleep(every_s)
    return value


def answer_of(code: str, before: str = "Here is the program:\n\n", after: str = "\nThat is all.\n") -> str:
    """A chat answer the way models write them: a sentence, one python fence, a sentence."""
    return f"{before}```python\n{code}```\n{after}"


def run_with_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "program.py"
    path.write_text(code)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def collect(session: Session) -> tuple[list[Message], Summary]:
    events = list(session.events())
    assert isinstance(events[-1], Summary)
    return events, events[-1]


def assert_session_keys_expire(settings, session_id: str) -> None:  # type: ignore[no-untyped-def]
    """No key of the session may outlive it: each one that exists carries an expiry."""
    from eager.common.connection import connect
    from eager.common.protocol import Keys

    client = connect(settings)
    for key in Keys(settings.namespace).session_keys(session_id):
        assert client.ttl(key) != -1, f"{key} never expires"
    client.close()


@dataclasses.dataclass(frozen=True)
class Outcome:
    stdout: str
    error_type: str | None
    error_line: int | None
    refused: bool = False  # the compiler refused the whole program with an error other than SyntaxError


def _default_sigint() -> None:
    """python as a terminal starts it: a test run in the background (nohup, `&`) ignores SIGINT, and its
    children would inherit that, while the sandbox starts every program with python's own SIGINT handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python_outcome(code: str, directory: Path) -> Outcome:
    """`python program.py`: its stdout, and its error from the traceback on stderr."""
    (directory / "program.py").write_text(code)
    done = subprocess.run([PYTHON, "program.py"], cwd=directory, capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, preexec_fn=_default_sigint)
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    if done.returncode == 0:
        return Outcome(stdout, None, None)
    lines = re.findall(r'File "[^"]*program\.py", line (\d+)', stderr)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    kind = re.match(r"([\w.]+)(:|$)", last)
    if kind is None:  # a sys.excepthook of the program's showed the error its own way
        return Outcome(stdout, UNSHOWN, None)
    return Outcome(stdout, kind.group(1), int(lines[-1]) if lines else None, refused=last.endswith("during compilation"))


def pid_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def in_pid_namespace(namespace: str) -> list[int]:
    """Host pids of the living processes in pid namespace `namespace`: one jail's, whatever they forked."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and pid_namespace(name) == namespace:
                with open(f"/proc/{name}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                        found.append(int(name))
        except OSError:
            continue  # gone meanwhile
    return found
