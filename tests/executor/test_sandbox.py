"""Hostile programs against the sandboxed interpreter, with real child processes.

Every misbehaviour ends in a typed outcome; the `sandboxed` fixture then checks, for
each test, that closing left no process of the slot uid and no working directory, and
that a fresh interpreter afterwards works (DESIGN.md: "The sandbox keeps generated code in").
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from eager.executor_pool.interpreter import (
    BatchTimeout,
    Interpreter,
    InterpreterDied,
    InterpreterError,
    LimitExceeded,
    truncation_marker,
)
from eager.executor_pool.sandbox import LAYERS, Sandbox, SandboxConfig, living, processes_of

ROOT = os.geteuid() == 0
SMALL = SandboxConfig(cpu_s=2, memory_mb=512, processes=32, open_files=64, file_size_mb=1, output_bytes=100_000)
needs_root = pytest.mark.skipif(not ROOT, reason="slot uids and network namespaces need root")


class Output:
    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.parts.append((stream, text))

    def text(self, stream: str = "stdout") -> str:
        return "".join(t for s, t in self.parts if s == stream)


def assert_fresh_interpreter_works() -> None:
    out = Output()
    with Interpreter(sandbox=SMALL) as it:
        assert it.run("print('fresh', 6 * 7)", 1, out, timeout=10).ok
    assert out.text() == "fresh 42\n"


@pytest.fixture
def sandboxed() -> Iterator[Interpreter]:
    it = Interpreter(sandbox=SMALL)
    it.start()
    uid, workdir = it.uid, it.host_workdir
    assert workdir is not None and os.path.isdir(workdir)
    try:
        yield it
    finally:
        it.close()
    assert not os.path.exists(workdir)
    if uid is not None:
        assert processes_of(uid) == []  # not even a zombie
    assert_fresh_interpreter_works()


def test_isolation_is_recorded(sandboxed: Interpreter) -> None:
    if ROOT:
        assert sandboxed.isolation == "+".join(LAYERS) == "pidns+mntns+ipcns+utsns+netns+cgroup+seccomp+uid"
        assert sandboxed.uid is not None and sandboxed.uid >= SMALL.uid_base
    out = Output()
    assert sandboxed.run("import os\nprint(os.getuid(), os.getpgrp() == os.getpid())", 1, out, timeout=10).ok
    assert out.text() == f"{sandboxed.uid if ROOT else os.getuid()} True\n"


def test_infinite_loop_hits_the_batch_timeout(sandboxed: Interpreter) -> None:
    with pytest.raises(BatchTimeout):
        sandboxed.run("while True:\n    pass", 1, Output(), timeout=0.5)


def test_cpu_limit_kills_a_spinning_program_as_a_limit(sandboxed: Interpreter) -> None:
    with pytest.raises(LimitExceeded) as info:
        sandboxed.run("while True:\n    pass", 1, Output(), timeout=30)
    assert "CPU time limit of 2 s" in str(info.value)


@needs_root
def test_fork_bomb_is_stopped_by_the_process_limit(sandboxed: Interpreter) -> None:
    result = sandboxed.run("import os\nwhile True:\n    os.fork()", 1, Output(), timeout=30)
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("BlockingIOError", 3)
    assert sandboxed.uid is not None and len(living(sandboxed.uid)) <= SMALL.processes


def test_huge_allocation_is_a_memory_error(sandboxed: Interpreter) -> None:
    result = sandboxed.run("data = bytearray(10 * 1024 ** 3)", 1, Output(), timeout=10)
    assert result.error is not None and result.error.type == "MemoryError"
    assert sandboxed.run("small = bytearray(1024)", 2, Output(), timeout=10).ok


def test_flood_of_output_is_truncated_and_the_session_goes_on(sandboxed: Interpreter) -> None:
    out = Output()
    code = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024 * 1024)\nprint('done', file=sys.stderr)"
    assert sandboxed.run(code, 1, out, timeout=30).ok
    assert out.text() == "x" * SMALL.output_bytes + truncation_marker(SMALL.output_bytes)
    assert out.text("stderr") == ""  # past the cap nothing more is kept, on any stream
    assert sandboxed.run("ok = True", 5, out, timeout=10).ok


def test_a_new_turn_of_a_conversation_gets_a_new_output_budget(sandboxed: Interpreter) -> None:
    flood = "import sys\nsys.stdout.write('x' * 200_000)\n"
    sandboxed.run(flood, 1, Output(), timeout=30)
    capped = Output()
    sandboxed.run("print('after the cap')", 3, capped, timeout=10)
    assert capped.text() == ""
    sandboxed.new_output_budget()
    turn = Output()
    sandboxed.run("print('next turn')", 1, turn, timeout=10)
    assert turn.text() == "next turn\n"


def test_os_exit_is_interpreter_died(sandboxed: Interpreter) -> None:
    with pytest.raises(InterpreterDied) as info:
        sandboxed.run("import os\nos._exit(3)", 1, Output(), timeout=10)
    assert info.value.returncode == 3


def test_sys_exit_mid_program_is_a_result(sandboxed: Interpreter) -> None:
    out = Output()
    result = sandboxed.run("import sys\nprint('before')\nsys.exit(0)\nprint('after')", 1, out, timeout=10)
    assert result.error is not None and (result.error.type, result.error.message, result.error.line) == ("SystemExit", "0", 3)
    assert out.text() == "before\n"


def test_segfault_is_interpreter_died(sandboxed: Interpreter) -> None:
    with pytest.raises(InterpreterDied) as info:
        sandboxed.run("import ctypes\nctypes.string_at(0)", 1, Output(), timeout=10)
    assert info.value.returncode == -11
    workdir = sandboxed.host_workdir or "."
    assert not os.path.isdir(workdir) or not any(name.startswith("core") for name in os.listdir(workdir))


def test_closing_stdout_does_not_hang(sandboxed: Interpreter) -> None:
    out = Output()
    assert sandboxed.run("import os\nos.close(1)", 1, out, timeout=10).ok
    result = sandboxed.run("print('into the void')", 3, out, timeout=10)
    assert result.error is not None and result.error.type == "OSError"
    assert sandboxed.run("os.write(2, b'alive\\n')", 4, out, timeout=10).ok
    assert out.text("stderr") == "alive\n"


def test_environment_holds_no_secrets(sandboxed: Interpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-key")
    monkeypatch.setenv("EAGER_REDIS_URL", "redis://secret-host:6379/0")
    out = Output()
    # The child was started before these were set; a fresh one must not see them either.
    with Interpreter(sandbox=SMALL) as it:
        assert it.run("import os\nprint(sorted(os.environ.items()))", 1, out, timeout=10).ok
        home = it.workdir
        expected = sorted({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}.items())
    assert out.text() == f"{expected}\n"
    assert "secret" not in out.text()


@needs_root
def test_no_network(sandboxed: Interpreter) -> None:
    with socket.create_connection(("127.0.0.1", 6379), timeout=5):
        pass  # Redis is reachable from here ...
    code = "import socket\ns = socket.socket()\ns.settimeout(5)\ns.connect(('127.0.0.1', 6379))"
    result = sandboxed.run(code, 1, Output(), timeout=10)  # ... and not from inside
    assert result.error is not None and result.error.type == "OSError"
    assert f"[Errno {errno.ENETUNREACH}]" in result.error.message
    assert "netns" in sandboxed.isolation


def test_file_size_limit(sandboxed: Interpreter) -> None:
    code = "with open('big', 'wb') as f:\n    f.write(b'0' * (5 * 1024 * 1024))"
    result = sandboxed.run(code, 1, Output(), timeout=10)
    assert result.error is not None and result.error.type == "OSError"
    assert f"[Errno {errno.EFBIG}]" in result.error.message
    assert os.path.getsize(os.path.join(sandboxed.host_workdir or "", "big")) <= SMALL.file_size_mb * 1024 * 1024


@needs_root
def test_cannot_write_outside_and_what_it_writes_in_tmp_never_reaches_the_host(sandboxed: Interpreter) -> None:
    outside = Path(__file__).resolve().parent / "pwned.txt"
    for target in (outside, "/etc/pwned", "/root/pwned", "/usr/pwned"):
        result = sandboxed.run(f"open({str(target)!r}, 'w')", 1, Output(), timeout=10)
        assert result.error is not None and result.error.type in ("PermissionError", "FileNotFoundError", "OSError")
        assert errno.errorcode[int(result.error.message.split("]")[0].split()[-1])] in ("EACCES", "ENOENT", "EROFS")
    assert not outside.exists() and not os.path.exists("/etc/pwned")
    leak = f"/tmp/eager-test-leak-{os.getpid()}"
    assert sandboxed.run(f"with open({leak!r}, 'w') as f:\n    f.write('x')", 2, Output(), timeout=10).ok
    assert not os.path.exists(leak)  # its /tmp is its own


def test_input_gets_eof_at_once(sandboxed: Interpreter) -> None:
    result = sandboxed.run("answer = input('? ')", 1, Output(), timeout=10)
    assert result.error is not None and result.error.type == "EOFError"


@needs_root
def test_slots_are_exclusive() -> None:
    with Interpreter(sandbox=SMALL) as a, Interpreter(sandbox=SMALL) as b:
        assert a.uid is not None and b.uid is not None and a.uid != b.uid
        first = a.uid
    with Interpreter(sandbox=SMALL) as c:
        assert c.uid == first  # the first free slot wins, so freed ones are reused


@needs_root
def test_a_python_the_slot_user_cannot_run_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    python.symlink_to("/usr/bin/python3")
    with pytest.raises(InterpreterError, match="cannot be run by sandbox uid"):
        Interpreter(python=str(python), sandbox=SMALL).start()


@needs_root
def test_a_private_runner_is_copied_where_the_slot_user_can_read_it(tmp_path: Path) -> None:
    private = tmp_path / "checkout"
    private.mkdir(mode=0o700)
    runner = private / "_runner.py"
    runner.write_text("print('runner')\n")
    box = Sandbox.claim(SMALL)
    try:
        copy = box.runner(runner)
        assert copy != str(runner) and Path(copy).read_text() == "print('runner')\n"
        assert stat.S_IMODE(os.stat(copy).st_mode) == 0o644
    finally:
        box.release()
