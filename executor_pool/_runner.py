"""The script that runs INSIDE the sandboxed interpreter subprocess.

Started by `executor_pool.interpreter.Interpreter` as
``python -I -u _runner.py <request_fd> <reply_fd>`` under a python the deployer
chooses (it may carry numpy/pandas but never our packages), so it imports only the
standard library.

Why it is shaped like this:
- The generated program arrives in batches of complete top-level statements, but it
  must behave exactly as if it ran as one script (DESIGN.md, "Same answers as
  serial"). So every batch is compiled with filename ``<eager>`` and padded with
  blank lines to its position in the whole program, the program text is kept in
  `linecache` so tracebacks show source lines, `from __future__` flags carry over
  to later batches, and user code runs in a real ``__main__`` module (pickle and
  ``import __main__`` see the program's names).
- Control messages travel on two dedicated pipes (4-byte big-endian length + JSON),
  never on stdout/stderr, so whatever the program prints (or closes) cannot confuse
  the protocol. Output goes to the real fds 1 and 2, which the parent streams live.
- Before replying to a batch the runner flushes the program's streams; the parent
  drains the output pipes when the reply arrives, which proves that every byte
  written during the batch is delivered before the batch is reported done.
"""

import __future__
import _ast  # the C half of `ast`: parsing needs no more, and `ast` costs ~8 ms of start
import json
import linecache
import os
import re
import sys
import time
import traceback
import types

FILENAME = "<eager>"
SETUP_FILENAME = "<eager:setup>"


def program_filename(turn):
    """A conversation's turns share globals, not program text: each turn is a program of its own, line 1
    again, and its own name keeps the tracebacks of functions earlier turns defined on their own source."""
    return FILENAME if turn <= 1 else "<eager:%d>" % turn
# Bound once: the program may monkeypatch modules the runner shares with it (a test
# library freezing time.time_ns, say) and must not break the protocol by doing so.
_read, _write, _time_ns = os.read, os.write, time.time_ns
_dumps, _loads, _format_exception = json.dumps, json.loads, traceback.format_exception
# Python source lines end only in \n, \r\n or \r; str.splitlines also splits on form
# feeds and U+2028, which would shift linecache away from the compiler's numbering.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
MAX_FRAME = 1 << 30
FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag


def _read_exact(fd, n):
    """Read exactly n bytes; None on EOF (the parent went away)."""
    parts = []
    while n:
        chunk = _read(fd, n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def recv(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise ValueError("request frame too large")
    body = _read_exact(fd, size)
    return None if body is None else _loads(body)


def send(fd, msg):
    body = _dumps(msg).encode("utf-8")
    data = memoryview(len(body).to_bytes(4, "big") + body)
    while data:
        data = data[_write(fd, data):]


def _flush_streams():
    """Push the program's buffered output into the pipes; a closed or replaced
    stream must not break the runner (the program may have closed sys.stdout)."""
    seen = set()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is None or id(stream) in seen:
            continue
        seen.add(id(stream))
        try:
            stream.flush()
        except BaseException:
            pass


class Program:
    """The generated program as seen so far, and the state shared by its batches."""

    def __init__(self, filename=FILENAME, module=None):
        self.filename = filename
        self.lines = []  # every line of the program so far, each ending in "\n"
        self.flags = 0  # __future__ compiler flags in force
        self.future_allowed = True  # only a docstring/__future__ imports ran so far
        self.seen_stmt = False
        if module is None:
            module = types.ModuleType("__main__")
            module.__dict__["__builtins__"] = __builtins__
        self.module = module
        sys.modules["__main__"] = module

    def register(self, code, first_line):
        """Place `code` at `first_line` in the program text and (re)publish it to
        linecache: the program may have cleared the cache since the last batch."""
        new = _LINE.findall(code)
        if new and not new[-1].endswith("\n"):
            new[-1] += "\n"
        start = first_line - 1
        if len(self.lines) < start:
            self.lines.extend(["\n"] * (start - len(self.lines)))
        self.lines[start:start + len(new)] = new
        self._publish()

    def _publish(self):
        lines = self.lines
        linecache.cache[self.filename] = (sum(map(len, lines)), None, lines, self.filename)

    def compile(self, code, first_line):
        """Compile one batch so that line numbers are those of the whole program."""
        seen_before = self.seen_stmt
        first_is_future = False
        if self.future_allowed or "__future__" in code:
            first_is_future = self._check_futures(code, first_line)
        if seen_before and not first_is_future and first_line >= 2:
            # A leading string in a later batch is not the module docstring of the
            # whole program; the `pass` keeps compile() from storing it as __doc__.
            padding = "\n" * (first_line - 2) + "pass\n"
        else:
            padding = "\n" * (first_line - 1)
        compiled = compile(padding + code, self.filename, "exec", self.flags, dont_inherit=True)
        self.flags |= compiled.co_flags & FUTURE_FLAGS
        return compiled

    def _check_futures(self, code, first_line):
        """A `from __future__` import after other statements is a SyntaxError in the
        whole program even when it opens its own batch, so track whether the program
        so far is only a docstring and future imports (usually: the first batch).
        Returns whether the batch opens with a future import."""
        tree = compile("\n" * (first_line - 1) + code, self.filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
        first_is_future = False
        for index, stmt in enumerate(tree.body):
            if isinstance(stmt, _ast.ImportFrom) and stmt.module == "__future__":
                first_is_future = first_is_future or index == 0
                if not self.future_allowed:
                    raise SyntaxError(
                        "from __future__ imports must occur at the beginning of the file",
                        (self.filename, stmt.lineno, stmt.col_offset + 1, self.line_text(stmt.lineno),
                         stmt.end_lineno, (stmt.end_col_offset or 0) + 1),
                    )
            elif self.seen_stmt or not self._is_docstring(stmt):
                self.future_allowed = False
            self.seen_stmt = True
        return first_is_future

    @staticmethod
    def _is_docstring(stmt):
        return (
            isinstance(stmt, _ast.Expr)
            and isinstance(stmt.value, _ast.Constant)
            and isinstance(stmt.value.value, str)
        )

    def line_text(self, lineno):
        if lineno and 0 < lineno <= len(self.lines):
            return self.lines[lineno - 1]
        return None


def _type_name(exc):
    """The exception's name as a traceback prints it on its last line."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("__main__", "builtins"):
        name = cls.__module__ + "." + name
    return name


def _message(exc):
    if isinstance(exc, SyntaxError):
        return str(exc.msg)
    if isinstance(exc, SystemExit):
        return str(exc.code)
    try:
        return str(exc)
    except BaseException:
        return "<exception str() failed>"


def describe(exc, tb, program, runner_globals):
    """Turn an exception from compiling or running a batch into the reply's error:
    the runner's own frames are dropped so the traceback reads like the script's."""
    while tb is not None and tb.tb_frame.f_globals is runner_globals:
        tb = tb.tb_next
    line = None
    if isinstance(exc, SyntaxError) and exc.filename == program.filename:
        line = exc.lineno
        if exc.text is None:  # compiler-stage errors (e.g. `return` outside function)
            exc.text = program.line_text(exc.lineno)
    else:
        walk = tb
        while walk is not None:
            if walk.tb_frame.f_code.co_filename == program.filename:  # the innermost line of this program
                line = walk.tb_lineno
            walk = walk.tb_next
    program._publish()
    try:
        text = "".join(_format_exception(type(exc), exc, tb))
    except BaseException as fmt_exc:  # a hostile __str__/__repr__ must not kill us
        text = "%s: %s\n(traceback could not be formatted: %r)\n" % (_type_name(exc), _message(exc), fmt_exc)
    return {"type": _type_name(exc), "message": _message(exc), "line": line, "traceback": text}


def run_batch(program, code, first_line, runner_pid):
    started = _time_ns()
    error = None
    try:
        program.register(code, first_line)
        compiled = program.compile(code, first_line)
        exec(compiled, program.module.__dict__)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are results too
        error = describe(exc, exc.__traceback__, program, globals())
        exc = None
    _flush_streams()
    if os.getpid() != runner_pid:
        # The program forked and this is the child falling out of the batch: it must
        # not answer on the control pipe (the real runner does); end it quietly.
        os._exit(0 if error is None else 1)
    return {"op": "done", "ok": error is None, "error": error,
            "started_ns": started, "finished_ns": _time_ns()}


def main():
    req_fd, rep_fd = int(sys.argv[1]), int(sys.argv[2])
    for fd in (req_fd, rep_fd):
        os.set_inheritable(fd, False)  # subprocesses of the program must not hold them
    runner_pid = os.getpid()
    sys.argv = [FILENAME]
    sys.path.insert(0, os.getcwd())  # like the script's own directory for `python prog.py`
    program = Program()
    send(rep_fd, {"op": "ready", "pid": runner_pid, "python": sys.version})
    while True:
        msg = recv(req_fd)
        if msg is None:
            return
        if msg.get("op") == "run":
            filename = msg.get("filename", FILENAME)
            if filename != program.filename:  # a new program (a conversation's next turn) in the same globals
                program = Program(filename, program.module)
            reply = run_batch(program, msg["code"], int(msg["first_line"]), runner_pid)
            reply["id"] = msg.get("id")
        else:
            reply = {"op": "error", "message": "unknown op %r" % (msg.get("op"),)}
        send(rep_fd, reply)


if __name__ == "__main__":
    main()
