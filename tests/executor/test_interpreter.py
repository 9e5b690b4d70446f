"""The persistent interpreter subprocess, tested against real child processes.

What these pin down is DESIGN.md's "What must hold" at the lowest level: running a
program in batches answers exactly like running it whole (output, error type,
message and line, even the traceback text of a real script), output streams while
a batch runs, and a dying, hanging or closed child never hangs or leaks.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from eager.executor_pool.interpreter import (
    BatchResult,
    BatchTimeout,
    CodeError,
    Interpreter,
    InterpreterDied,
)
from tests.helpers import in_pid_namespace, pid_namespace

REPO = Path(__file__).resolve().parents[2]


class Output:
    """on_output callback that records what arrived, and when."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def __call__(self, stream: str, text: str) -> None:
        self.events.append((stream, text, time.time_ns()))

    def text(self, stream: str = "stdout") -> str:
        return "".join(t for s, t, _ in self.events if s == stream)


@pytest.fixture
def interp():
    it = Interpreter()
    it.start()
    try:
        yield it
    finally:
        it.close()


def gone(pid: int) -> bool:
    """Dead or a zombie waiting for pid 1 to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def statements(program: str) -> list[tuple[str, int]]:
    """Split a program into its top-level statements as (code, first_line), the way
    the detector does: blank and comment lines go with the statement after them,
    and the pieces concatenate back to the program."""
    lines = program.splitlines(keepends=True)
    tree = ast.parse(program)
    pieces, start = [], 1
    for stmt in tree.body:
        end = stmt.end_lineno
        assert end is not None
        pieces.append(("".join(lines[start - 1:end]), start))
        start = end + 1
    assert "".join(code for code, _ in pieces) == "".join(lines[: start - 1])
    return pieces


def batches(program: str, size: int) -> list[tuple[str, int]]:
    stmts = statements(program)
    return [("".join(c for c, _ in stmts[i:i + size]), stmts[i][1]) for i in range(0, len(stmts), size)]


def run_batches(pieces: list[tuple[str, int]]) -> tuple[Output, CodeError | None]:
    out = Output()
    with Interpreter() as it:
        for code, first_line in pieces:
            result = it.run(code, first_line, out)
            if not result.ok:
                assert result.error is not None
                # each interpreter has a working directory of its own: the traceback names its program file there
                traceback = result.error.traceback.replace(f'"{it.workdir}/', '"WORKDIR/')
                return out, dataclasses.replace(result.error, traceback=traceback)
    return out, None


PROGRAM = textwrap.dedent('''\
    """Module doc."""
    from __future__ import annotations
    import math, sys

    def area(r: Radius) -> float:
        return math.pi * r * r

    class Acc:
        def __init__(self):
            self.items: list[int] = []

        def add(self, x):
            self.items.append(x)
            return self

    # a comment between statements
    acc = Acc()
    for i in range(5):
        acc.add(i * i)
    print(__doc__, sum(acc.items), round(area(2), 3))
    print(area.__annotations__, file=sys.stderr)
    try:
        {}["missing"]
    except KeyError as e:
        print("caught", repr(e))
    "not a docstring"
    print(__doc__)

    def check(xs):
        return xs[10]
    data = [acc.add(i).items[-1] for i in range(3)]
    print(data)
    total = check(data) + 1
    print("never")
''')


def test_batches_answer_like_one_run_and_like_a_script(tmp_path: Path) -> None:
    assert len(statements(PROGRAM)) >= 10
    whole_out, whole_err = run_batches([(PROGRAM, 1)])
    assert whole_err is not None
    assert (whole_err.type, whole_err.message, whole_err.line) == ("IndexError", "list index out of range", 30)
    assert whole_out.text() == "Module doc. 30 12.566\ncaught KeyError('missing')\nModule doc.\n[0, 1, 2]\n"
    for size in (1, 3):
        out, err = run_batches(batches(PROGRAM, size))
        assert (out.text(), out.text("stderr")) == (whole_out.text(), whole_out.text("stderr"))
        assert err == whole_err  # type, message, line and the traceback text itself

    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    real = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert real.stdout == whole_out.text()
    assert real.stderr == whole_out.text("stderr") + whole_err.traceback.replace('"WORKDIR/', f'"{tmp_path}/')


def test_state_persists_and_main_is_a_real_module(interp: Interpreter) -> None:
    out = Output()
    assert interp.run("class Point:\n    pass\np = Point()\np.x = 41", 1, out).ok
    result = interp.run(
        "import pickle\np.x += 1\nq = pickle.loads(pickle.dumps(p))\nprint(__name__, q.x, type(q) is Point)", 5, out)
    assert result == BatchResult(ok=True, error=None, started_ns=result.started_ns, finished_ns=result.finished_ns)
    assert result.started_ns <= result.finished_ns
    assert out.text() == "__main__ 42 True\n"


def test_output_streams_while_the_batch_runs(interp: Interpreter) -> None:
    out = Output()
    result = interp.run("import time\nprint('first')\ntime.sleep(0.6)\nprint('second')", 1, out)
    assert result.ok
    first_ns = next(t for s, text, t in out.events if "first" in text)
    assert result.finished_ns - first_ns > 0.4e9
    assert out.text() == "first\nsecond\n"


def test_runtime_error_line_is_a_program_line(interp: Interpreter) -> None:
    out = Output()
    assert interp.run("def f(a):\n    b = a + 1\n    return 1 / (b - b)\n", 1, out).ok
    assert interp.run("x = 5\n", 4, out).ok
    result = interp.run("\n# comment\nf(x)\n", 5, out)
    assert not result.ok and result.error is not None
    assert (result.error.type, result.error.message, result.error.line) == ("ZeroDivisionError", "division by zero", 3)
    tb = result.error.traceback
    assert tb.startswith(f'Traceback (most recent call last):\n  File "{interp.workdir}/program.py", line 7, in <module>\n'
                         '    f(x)\n')
    assert f'  File "{interp.workdir}/program.py", line 3, in f\n    return 1 / (b - b)\n' in tb
    assert "_runner" not in tb


def test_syntax_and_compile_errors(interp: Interpreter) -> None:
    out = Output()
    assert interp.run("x = 1\n", 1, out).ok
    result = interp.run("print('not run')\ny = (1,\n", 2, out)
    assert result.error is not None
    assert (result.error.type, result.error.line) == ("SyntaxError", 3)
    assert result.error.message == "'(' was never closed"
    result = interp.run("\nreturn x\n", 4, out)
    assert result.error is not None
    assert (result.error.type, result.error.message, result.error.line) == ("SyntaxError", "'return' outside function", 5)
    assert result.error.traceback == (f'  File "{interp.workdir}/program.py", line 5\n    return x\n    ^^^^^^^^\n'
                                      "SyntaxError: 'return' outside function\n")
    result = interp.run("from __future__ import annotations\n", 6, out)  # legal only at the start of the program
    assert result.error is not None and (result.error.type, result.error.line) == ("SyntaxError", 6)
    assert interp.run("print(x)", 7, out).ok
    assert out.text() == "1\n"


def test_future_import_stays_in_force(interp: Interpreter) -> None:
    out = Output()
    assert interp.run('"""doc"""\n', 1, out).ok
    assert interp.run("from __future__ import annotations\n", 2, out).ok
    assert interp.run("def f(x: NotDefined) -> AlsoNot:\n    return x\n", 3, out).ok
    assert interp.run("print(f.__annotations__, __doc__)", 5, out).ok
    assert out.text() == "{'x': 'NotDefined', 'return': 'AlsoNot'} doc\n"


def test_large_output_is_fully_delivered(interp: Interpreter) -> None:
    out = Output()
    code = "import sys\nsys.stdout.write('x' * 200_000)\nsys.stderr.write('e' * 100_000)\nprint(end='!')"
    assert interp.run(code, 1, out).ok
    assert out.text() == "x" * 200_000 + "!"
    assert out.text("stderr") == "e" * 100_000


def test_invalid_and_split_utf8(interp: Interpreter) -> None:
    out = Output()
    # The euro sign's bytes are split across two batches, so across two reads.
    assert interp.run("import sys\nsys.stdout.buffer.write(b'a\\xffb\\xe2\\x82')", 1, out).ok
    assert interp.run("sys.stdout.buffer.write(b'\\xac\\n')\nprint('\\u00e9')", 3, out).ok
    assert out.text() == "a\ufffdb\u20ac\n\u00e9\n"


def test_system_exit_is_a_result(interp: Interpreter) -> None:
    out = Output()
    result = interp.run("import sys\nsys.exit(0)", 1, out)
    assert result.error is not None
    assert (result.error.type, result.error.message, result.error.line) == ("SystemExit", "0", 2)
    result = interp.run("exit(3)", 3, out)
    assert result.error is not None and (result.error.type, result.error.message) == ("SystemExit", "3")
    assert interp.run("print('runner still alive')", 4, out).ok


def test_input_raises_eof(interp: Interpreter) -> None:
    result = interp.run("name = input('who? ')", 1, Output())
    assert result.error is not None and result.error.type == "EOFError"


def test_segfault_raises_interpreter_died(interp: Interpreter) -> None:
    out = Output()
    with pytest.raises(InterpreterDied) as info:
        interp.run("print('before', flush=True)\nimport ctypes\nctypes.string_at(0)", 1, out, timeout=10)
    assert info.value.returncode == -11
    assert out.text() == "before\n"
    with pytest.raises(InterpreterDied):
        interp.run("print(1)", 4, out)


def sandbox_leftovers(namespace: str, printed_pid: int) -> list[int]:
    """What is still alive of a closed interpreter's processes: in its jail, anything of its pid namespace
    `namespace` (the pids it printed are the namespace's own); without one, the process it printed."""
    if namespace != pid_namespace("self"):
        return in_pid_namespace(namespace)
    return [] if gone(printed_pid) else [printed_pid]


def test_exit_while_a_grandchild_holds_the_pipes(interp: Interpreter) -> None:
    out = Output()
    namespace = pid_namespace(interp.pid)
    code = "import os, subprocess\np = subprocess.Popen(['sleep', '30'])\nprint(p.pid, flush=True)\nos._exit(3)"
    started = time.monotonic()
    with pytest.raises(InterpreterDied) as info:
        interp.run(code, 1, out, timeout=10)
    assert info.value.returncode == 3
    assert time.monotonic() - started < 5
    assert sandbox_leftovers(namespace, int(out.text())) == []  # orphaned once its parent died, still killed


def test_timeout_kills_the_child(interp: Interpreter) -> None:
    pid = interp.pid
    assert pid is not None
    started = time.monotonic()
    with pytest.raises(BatchTimeout):
        interp.run("import time\nprint('going to sleep')\ntime.sleep(30)", 1, Output(), timeout=0.5)
    assert time.monotonic() - started < 5
    assert not psutil.pid_exists(pid)


def test_closed_stdout_does_not_hang(interp: Interpreter) -> None:
    out = Output()
    assert interp.run("import sys\nsys.stdout.close()", 1, out, timeout=10).ok
    result = interp.run("print('x')", 3, out, timeout=10)
    assert result.error is not None and result.error.type == "ValueError"
    assert interp.run("import os\nos.close(1)", 4, out, timeout=10).ok
    assert interp.run("os.write(2, b'still here\\n')", 6, out, timeout=10).ok
    assert out.text("stderr") == "still here\n"


def test_forked_child_does_not_answer(interp: Interpreter) -> None:
    out = Output()
    code = "import os\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n    os.waitpid(pid, 0)\n    print('parent')"
    assert interp.run(code, 1, out, timeout=10).ok
    assert interp.run("print('next')", 8, out, timeout=10).ok
    assert out.text() == "child\nparent\nnext\n"


def test_close_kills_tree_and_removes_workdir() -> None:
    it = Interpreter()
    it.start()
    workdir, pid = it.host_workdir, it.pid
    assert workdir is not None and pid is not None and os.path.isdir(workdir)
    namespace = pid_namespace(pid)
    out = Output()
    assert it.run("import subprocess\np = subprocess.Popen(['sleep', '100'])\nprint(p.pid)", 1, out).ok
    grandchild = int(out.text())
    assert len(sandbox_leftovers(namespace, grandchild)) >= 1
    it.close()
    assert not os.path.exists(workdir)
    assert gone(pid) and sandbox_leftovers(namespace, grandchild) == []
    it.close()  # idempotent


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAGER_TEST_SECRET", "hunter2")
    out = Output()
    with Interpreter(env={"MPLBACKEND": "Agg"}) as it:
        code = "import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd() == %r)" % it.workdir
        assert it.run(code, 1, out).ok
    assert "hunter2" not in out.text() and "EAGER_TEST_SECRET" not in out.text()
    assert out.text() == "['HOME', 'LANG', 'MPLBACKEND', 'PATH', 'TMPDIR']\nTrue\n"


def test_child_dies_with_its_parent() -> None:
    """The RQ work-horse case: the horse is killed (or exits with os._exit) and no
    finally runs; PR_SET_PDEATHSIG must take the interpreter down with it."""
    code = ("import sys, time\nsys.path.insert(0, %r)\nfrom executor_pool.interpreter import Interpreter\n"
            "it = Interpreter()\nit.start()\nprint(it.pid, flush=True)\ntime.sleep(60)\n") % str(REPO)
    horse = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert horse.stdout is not None
        child = psutil.Process(int(horse.stdout.readline()))
        assert child.ppid() == horse.pid
    finally:
        horse.kill()
        horse.wait()
    try:
        child.wait(timeout=5)
    except psutil.TimeoutExpired:
        assert child.status() == psutil.STATUS_ZOMBIE


def test_a_new_program_in_the_same_globals_numbers_its_own_lines_and_allows_future_imports(interp: Interpreter) -> None:
    """A conversation's next turn: the names stay, the program text starts over at line 1 under its own name."""
    from eager.executor_pool._runner import program_filename

    assert interp.run("x = 1\ndef half(n):\n    return n / 0\n", 1, Output(), timeout=10).ok
    interp.begin_program(program_filename(2))
    out = Output()
    result = interp.run("from __future__ import annotations\nprint(x)\nhalf(x)\n", 1, out, timeout=10)
    assert out.text() == "1\n"
    assert result.error is not None and result.error.type == "ZeroDivisionError"
    assert result.error.line == 3  # the innermost line of this turn's program: the call
    traceback = result.error.traceback
    assert f'File "{interp.workdir}/program_2.py", line 3, in <module>\n    half(x)' in traceback
    assert f'File "{interp.workdir}/program.py", line 3, in half\n    return n / 0' in traceback  # turn 1's function, its own source


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_a_preload_is_loaded_before_the_program_and_hidden_until_it_imports_it() -> None:
    """The preloaded numpy is in the child's memory before the program's first line, yet the program finds
    nothing of it until its own import, which gets those very modules (no second copy is loaded)."""
    program = ("import gc, sys, types, warnings\nprint('numpy' in sys.modules, len(warnings.filters))\nimport numpy\n"
               "print(numpy.__spec__.name, numpy.__spec__.loader.__class__.__name__, len(warnings.filters))\n"
               "print(sum(isinstance(o, types.ModuleType) and o.__name__ == 'numpy' for o in gc.get_objects()))\n")
    seen = {}
    for preload in ((), ("numpy",)):
        out = Output()
        with Interpreter(preload=preload) as it:
            assert it.pid is not None
            loaded_early = "_multiarray_umath" in _maps(it.pid)
            assert it.run(program, 1, out, timeout=60).ok
        seen[preload] = (loaded_early, out.text())
    assert seen[()][0] is False and seen[("numpy",)][0] is True
    assert seen[()][1] == seen[("numpy",)][1]
    assert seen[()][1].startswith("False ") and seen[()][1].endswith("\n1\n")  # one numpy module, not two
