"""Eager prints what python prints: adversarial programs through the real stack, compared with real python.

Each program runs under `python program.py` and through the whole stack (Procfile stages, the real
Redis, the sandboxed interpreter) under the `eager` and `serial` gates, as a markdown answer and as
raw code, at a slow and a fast token rate, so batch boundaries fall in different places. All must
agree on stdout, the error's type and the error's line. A SyntaxError is the one honest difference
(DESIGN.md): eager may already have run the valid statements before it, so only its type and line
are compared. Programs whose output or error is larger than one message (OVERSIZED) agree within
the sandbox's output cap, their error texts cut with a marker, and still end with their Summary.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from eager.common.config import Settings
from eager.common.protocol import MAX_BODY_CHARS, ExecutionError, Message, Output, SessionStatus, Summary, clip
from eager.client import Client
from eager.replay import SpeedProfile
from eager.executor_pool.interpreter import truncation_marker
from tests.conftest import ReplayStacks, private_namespace
from tests.helpers import UNSHOWN, Outcome, answer_of, collect, python_outcome

pytestmark = pytest.mark.slow

RATES = {"slow": SpeedProfile(ttft_s=0.05, tokens_per_s=150.0), "fast": SpeedProfile(ttft_s=0.05, tokens_per_s=3000.0)}
PRELOADS = {"slow": Settings.from_env().preload, "fast": ""}  # with the default preload and without

PROGRAMS = {
    # lines end where CPython ends them, at \r\n, at a lone \r and at \n: chunk spans, padding, error lines
    "lone-cr-line-ends": (
        "x = 1\ry = 2\rprint(x + y)\r# a comment\rfor i in range(2):\r    print(i)\r\rz = (1,\r2)\r"
        "print(z)\rdef f():\r    return 1 / 0\rprint(f())\r"
    ),
    "mixed-line-ends": (
        "a = 1\r\nb = 2\rc = 3\nif a:\r    print('a')\r\nelse:\n    print('b')\rt = [a,\r\nb,\r\n"
        "c]\rprint(t)\nprint(undefined_name)\r\n"
    ),
    "cr-inside-strings": (
        's = """one\rtwo\r\nthree"""\rprint(repr(s))\rb = rb"""x\ry"""\rprint(b)\r'
        "print(repr('\\r'), len(s))\rraise ValueError(s.count(chr(10)))\r"
    ),
    "cr-in-a-one-quote-string": "print('runs')\rx = 2\rs = 'a\rb'\rprint(s)\r",
    "cr-program-file-as-written": (
        "import os\rprint('first')\r\nprint(repr(open(__file__, newline='').read()[-20:]))\r"
    ),
    # the compiler's checks across statements: python refuses the whole program
    "global-after-assignment": """\
        x = 1
        print(x)
        global x
        """,
    "annotated-then-global": """\
        y: int = 2
        print(y)
        def f():
            return y
        global y
        """,
    # the program's changes to the interpreter do not change how later batches compile
    "warnings-as-errors": r"""
        import warnings
        warnings.simplefilter("error")
        print("filters set")
        pattern = "\d+"
        print(pattern)
        """,
    "low-recursion-limit": """\
        import sys
        sys.setrecursionlimit(60)
        print("limit set")
        total = """ + "+".join(["1"] * 300) + """
        print(total)
        """,
    "audit-hook-refusing-compile": """\
        import sys
        def hook(event, args):
            if event in ("compile", "exec"):
                raise RuntimeError("refused " + event)
        sys.addaudithook(hook)
        print("hook added")
        try:
            compile("1 + 1", "<s>", "eval")
        except RuntimeError as exc:
            print(exc)
        print("still running")
        """,
    "audit-hook-sees-the-program-only": """\
        import sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(event) if event in ("open", "compile", "exec") else None)
        print("hooked")
        with open("data.txt", "w") as f:
            f.write("x")
        print(seen)
        """,
    "settrace-sees-the-program-only": """\
        import sys, os
        seen = []
        def tracer(frame, event, arg):
            seen.append((event, frame.f_code.co_name, os.path.basename(frame.f_code.co_filename)))
        sys.settrace(tracer)
        def square(n):
            return n * n
        print(square(3))
        sys.settrace(None)
        print(seen)
        """,
    "setprofile-sees-the-program-only": """\
        import sys, os
        seen = []
        def profiler(frame, event, arg):
            if event in ("call", "c_call"):
                seen.append((event, getattr(arg, "__name__", frame.f_code.co_name)))
        sys.setprofile(profiler)
        def double(n):
            return abs(n) * 2
        print(double(-4))
        sys.setprofile(None)
        print(seen)
        """,
    "builtins-replaced": """\
        __builtins__ = {}
        print("module level keeps its builtins")
        def later():
            return len("abc")
        try:
            later()
        except NameError as exc:
            print("function:", exc)
        print("done")
        """,
    # __main__ as python makes it
    "main-namespace": """\
        print(__annotations__)
        x: int = 1
        print(__annotations__, __name__, __package__, __spec__, __cached__)
        import os, sys
        print(os.path.basename(__file__), sys.argv, os.path.dirname(__file__) == os.getcwd())
        """,
    "inspect-getsource": """\
        import inspect
        class Shape:
            sides = 4
        print(inspect.getsource(Shape))
        def area(r):
            return 3 * r * r
        print(inspect.getsource(area))
        """,
    "logging-names-the-file": """\
        import logging, sys
        logging.basicConfig(format="%(module)s|%(filename)s|%(lineno)d|%(message)s", stream=sys.stdout)
        logging.warning("hello")
        """,
    "source-after-clearcache": """\
        import linecache, traceback
        def fail():
            raise ValueError("bad")
        linecache.clearcache()
        try:
            fail()
        except ValueError:
            print(traceback.format_exc().splitlines()[-2].strip())
        """,
    "multiprocessing-spawn": """\
        import multiprocessing
        def square(n):
            return n * n
        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.map(square, [1, 2, 3]))
        """,
    # the interpreter's end
    "atexit": """\
        import atexit
        atexit.register(print, "goodbye")
        print("main")
        """,
    "atexit-after-an-error": """\
        import atexit
        atexit.register(print, "goodbye")
        print("main")
        1 / 0
        """,
    "excepthook": """\
        import sys
        def hook(kind, value, tb):
            print("hook:", kind.__name__, value)
        sys.excepthook = hook
        print("before")
        raise KeyError("boom")
        """,
    "non-daemon-thread": """\
        import threading, time
        def work():
            time.sleep(0.3)
            print("thread done")
        threading.Thread(target=work).start()
        print("main done")
        """,
    "finalizers-at-exit": """\
        import weakref
        class Resource:
            def __del__(self):
                print("released")
        class Handle:
            pass
        handle = Handle()
        weakref.finalize(handle, print, "finalized")
        resource = Resource()
        print("end of program")
        """,
    "partial-utf8-at-the-end": """\
        import sys
        sys.stdout.flush()
        sys.stdout.buffer.write(b"price: \\xe2\\x82")
        """,
    # the default interpreter carries the data-science stack (setup builds it; nothing to configure)
    "data-science-stack": """\
        import os
        import numpy as np
        import pandas as pd
        from scipy import stats
        from sklearn.linear_model import LinearRegression
        import matplotlib.pyplot as plt
        frame = pd.DataFrame({"x": np.arange(10), "y": 2 * np.arange(10) + 1})
        print(frame.describe().loc["mean"].tolist())
        print(round(stats.pearsonr(frame.x, frame.y)[0], 6))
        print(round(float(LinearRegression().fit(frame[["x"]], frame.y).coef_[0]), 6))
        figure, axes = plt.subplots()
        axes.plot(frame.x, frame.y)
        figure.savefig("plot.png")
        print(os.path.getsize("plot.png") > 1000)
        """,
    # a warm interpreter's preloaded modules are invisible until the program imports them
    "preload-invisible": """\
        import sys, warnings, atexit
        print([name for name in ("numpy", "pandas", "dateutil") if name in sys.modules], len(warnings.filters),
              atexit._ncallbacks())
        import pandas as pd
        print("numpy" in sys.modules, len(warnings.filters), atexit._ncallbacks(), pd.__spec__.name)
        """,
    "sigint-default": """\
        import signal
        print(signal.getsignal(signal.SIGINT))
        """,
    # nested deeper than the recursion limit on one line: the static gate walks it with a stack
    "600-term-sum": "total = " + "+".join(["1"] * 600) + "\nprint('total', total)\n",
    # python's compiler refuses an expression 4,000 deep (RecursionError during compilation) and runs nothing
    "too-deep-for-the-compiler": "print('first')\ntotal = " + "-" * 4000 + "1\nprint(total)\n",
    # what would run differently early is held under the default preset, and runs with the rest
    "fork": """\
        import os
        from os import fork
        print("parent starts", flush=True)
        pid = fork()
        if pid == 0:
            print("the child runs the statements after the fork", flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exited with", os.waitstatus_to_exitcode(status))
        """,
    # run early, the timer fires while the model still writes the rest (a second at the slow rate)
    "faulthandler-timer": """\
        import faulthandler
        faulthandler.dump_traceback_later(0.4, exit=True)
        squares = [n * n for n in range(10)]
        print("squares", squares)
        words = "the quick brown fox jumps over the lazy dog".split()
        print("longest", max(words, key=len), "shortest", min(words, key=len))
        table = [(word, len(word), word.upper()) for word in words if len(word) > 3]
        for word, size, upper in table:
            print(f"{word:>8} {size:3d} {upper}")
        evens = [value for value in range(40) if value % 2 == 0 and value % 3 != 0]
        print("evens", evens, "sum", sum(evens), "mean", sum(evens) / len(evens))
        faulthandler.cancel_dump_traceback_later()
        print("done")
        """,
}
# More than one message carries (MAX_BODY_CHARS as JSON): each must still end with its Summary.
OVERSIZED = {
    "print-5M": 'print("x" * 5_000_000)\nprint("after")\n',
    "error-4M": 'print("before")\nraise ValueError("y" * 4_000_000)\n',
    "control-characters-1M": 'print("\\x01" * 1_000_000)\nprint("end")\n',
}


def eager_outcome(summary: Summary) -> Outcome:
    error = summary.error or {}
    return Outcome(summary.stdout, error.get("type"), error.get("line"))


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Settings]]:
    """One stack per token rate (four executors each: a program's four sessions run at once; one rate preloading),
    serving every program as markdown and raw."""
    answers = {}
    for name, body in {**PROGRAMS, **OVERSIZED}.items():
        code = textwrap.dedent(body).lstrip("\n")
        answers[name] = answer_of(code)
        answers[f"{name}-raw"] = code
    with contextlib.ExitStack() as started:
        by_rate = {}
        for rate, profile in RATES.items():
            stacks = ReplayStacks(started.enter_context(private_namespace()), tmp_path_factory.mktemp(rate))
            started.callback(stacks.stop)
            by_rate[rate], _ = stacks(answers, profile, executors=4, batch_timeout_s=10.0, preload=PRELOADS[rate])
        yield by_rate


def run_everywhere(settings: Settings, name: str) -> dict[str, tuple[list[Message], Summary]]:
    """The program under both gates, as markdown and as raw code, its sessions submitted at once."""
    with Client(settings) as client:
        sessions = {}
        for gate in ("eager", "serial"):
            sessions[f"{gate}/markdown"] = client.submit(messages=[{"role": "user", "content": "go"}], model=name,
                                                         gate=gate)
            sessions[f"{gate}/raw"] = client.submit(prompt="# go\n", model=f"{name}-raw", gate=gate)
        return {how: collect(session) for how, session in sessions.items()}


def everywhere(stacks: dict[str, Settings], name: str) -> Iterator[tuple[str, list[Message], Summary]]:
    """(where, events, summary) of the program at every rate, gate and answer format; the rates run at once."""
    with ThreadPoolExecutor(len(stacks)) as pool:
        by_rate = dict(zip(stacks, pool.map(lambda settings: run_everywhere(settings, name), stacks.values())))
    for rate, runs in by_rate.items():
        for how, (events, summary) in runs.items():
            yield f"{name} {rate} {how}: {summary.status} {summary.detail or ''}", events, summary


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_eager_and_serial_print_what_python_prints(stacks: dict[str, Settings], name: str, tmp_path: Path) -> None:
    code = textwrap.dedent(PROGRAMS[name]).lstrip("\n")
    expected = python_outcome(code, tmp_path)
    for where, _, summary in everywhere(stacks, name):
        got = eager_outcome(summary)
        if expected.error_type == "SyntaxError":
            assert summary.status is SessionStatus.SYNTAX_ERROR, where
            assert (got.error_type, got.error_line) == (expected.error_type, expected.error_line), where
            continue
        if expected.refused:  # python names no line: eager names the statement's
            assert summary.status is SessionStatus.SYNTAX_ERROR and got.error_type == expected.error_type, where
            continue
        if expected.error_type == UNSHOWN:
            assert got.stdout == expected.stdout and summary.status is SessionStatus.ERROR, where
            continue
        assert got == expected, where
        assert summary.status is (SessionStatus.OK if expected.error_type is None else SessionStatus.ERROR), where


def printed(events: list[Message]) -> str:
    return "".join(e.text for e in events if isinstance(e, Output) and e.stream == "stdout")


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_output_and_errors_larger_than_a_message_still_end_with_their_summary(stacks: dict[str, Settings], name: str,
                                                                              tmp_path: Path) -> None:
    """Python prints it all; eager keeps the sandbox's output cap of it and cuts an error's long texts with a
    marker, and a Summary whose stdout escapes to more than one message carries as much as fits, saying so."""
    expected = python_outcome(OVERSIZED[name], tmp_path)
    cap = next(iter(stacks.values())).sandbox_output_bytes
    for where, events, summary in everywhere(stacks, name):
        got = eager_outcome(summary)
        assert (got.error_type, got.error_line) == (expected.error_type, expected.error_line), where
        assert summary.status is (SessionStatus.OK if expected.error_type is None else SessionStatus.ERROR), where
        if name == "print-5M":
            assert summary.stdout == expected.stdout[:cap] + truncation_marker(cap), where
            assert printed(events) == summary.stdout, where
        elif name == "error-4M":
            assert summary.stdout == expected.stdout == "before\n", where
            assert summary.error["message"] == clip("y" * 4_000_000), where
            assert "characters cut]" in summary.error["traceback"], where
            assert summary.error["traceback"].endswith("y" * 1000 + "\n"), where
            assert [e.message for e in events if isinstance(e, ExecutionError)] == [summary.error["message"]], where
        else:
            assert printed(events) == expected.stdout, where  # the output events carry it all
            kept, _ = summary.stdout.split("\n[eager: stdout cut here to fit the summary", 1)
            assert expected.stdout.startswith(kept) and len(kept) > MAX_BODY_CHARS // 7, where
            assert "the summary's stdout is cut to fit one message" in summary.detail, where
