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
import _thread
import builtins
import functools
import json
import linecache
import os
import re
import sys
import time
import traceback
import types
import warnings
import weakref

FILENAME = "<eager>"
SETUP_FILENAME = "<eager:setup>"
PROGRAM_FILE = "program.py"


def program_filename(turn: int) -> str:
    """A conversation's turns share globals, not program text: each turn is a program of its own, line 1
    again, and its own name keeps the tracebacks of functions earlier turns defined on their own source."""
    return FILENAME if turn <= 1 else "<eager:%d>" % turn


def program_file(name: str) -> "str | None":
    """The file in the working directory that holds program `name`'s text, as `python program.py` has one:
    `__file__`, tracebacks, logging and `inspect` name it. None for the setup code, which is not the program."""
    if name == FILENAME:
        return PROGRAM_FILE
    turn = re.fullmatch(r"<eager:(\d+)>", name)
    return "program_%s.py" % turn.group(1) if turn else None
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


# What the interpreter was before the program's first line. Python compiles a whole script under this
# state before running any of it, so every batch is compiled under it too, whatever the program has changed
# since: warning filters that make a compile warning an error, a recursion limit too low for the compiler.
_STARTUP_FILTERS = list(warnings.filters)
_STARTUP_SHOWWARNING = warnings.showwarning
_STARTUP_RECURSION_LIMIT = sys.getrecursionlimit()
_settrace, _gettrace, _setprofile = sys.settrace, sys.gettrace, sys.setprofile
_setrecursionlimit = sys.setrecursionlimit
# Called through partial objects, which a profile function does not see: a call of a builtin from Python code
# is an event for it, and these calls are the runner's, not the program's.
_getprofile = functools.partial(sys.getprofile)
_unprofile = functools.partial(sys.setprofile, None)


class Audit:
    """The program's audit hooks, behind one real hook of ours that is silent while the runner works.

    A script is compiled whole before its first line runs, so its own hooks never see it compiled; here
    later batches are compiled, and their file written, after the hooks exist, and a hook refusing
    "compile" would stop the runner itself. A real hook cannot be removed, so `sys.addaudithook` is
    replaced by one that keeps the program's hooks here; ours is added with the program's first.
    """

    def __init__(self):
        self.hooks = []
        self.listening = False  # whether the main thread runs the program's code (not the runner's)
        self._real_add = sys.addaudithook
        self._added = False
        self._runner_thread = _thread.get_ident()

    def dispatch(self, event, args):
        if self.listening or _thread.get_ident() != self._runner_thread:  # the program's threads: always
            for hook in self.hooks:
                hook(event, args)

    def install(self):
        def addaudithook(hook):
            if not self._added:
                self._real_add(self.dispatch)
                self._added = True
            try:
                self.dispatch("sys.addaudithook", ())
            except RuntimeError:  # as CPython does: an existing hook refused it, silently
                return
            self.hooks.append(hook)

        addaudithook.__doc__ = self._real_add.__doc__
        sys.addaudithook = addaudithook


AUDIT = Audit()


class Tracing:
    """The program's trace and profile functions, kept off while the runner works between batches, so
    they see the program's frames only. Each is put back by a gate on the batch's first event: the batch's
    own module frame stays untraced, as the running module frame of a script is for a trace set inside it."""

    def __init__(self):
        self.trace = None
        self.profile = None

    def resume(self, code):
        trace, profile = self.trace, self.profile
        if trace is not None:
            def trace_gate(frame, event, arg):
                AUDIT.listening = False
                _settrace(trace)
                AUDIT.listening = True

            _settrace(trace_gate)
        if profile is not None:
            def profile_gate(frame, event, arg):
                if event == "call" and frame.f_code is code:
                    AUDIT.listening = False
                    _setprofile(profile)
                    AUDIT.listening = True

            _setprofile(profile_gate)


def _compile(source, filename, flags):
    """compile() under the startup state (see _STARTUP_FILTERS)."""
    limit = sys.getrecursionlimit()
    try:
        _setrecursionlimit(max(limit, _STARTUP_RECURSION_LIMIT))
        with warnings.catch_warnings():
            warnings.filters[:] = _STARTUP_FILTERS
            warnings.showwarning = _STARTUP_SHOWWARNING
            warnings._filters_mutated()
            return compile(source, filename, "exec", flags, dont_inherit=True)
    finally:
        try:
            _setrecursionlimit(limit)
        except (RecursionError, ValueError):
            pass


def _main_namespace(module, path):
    """What `python program.py` puts in `__main__` before the first line."""
    loader = None
    if path is not None:
        loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    module.__dict__.update({"__annotations__": {}, "__builtins__": builtins, "__cached__": None, "__doc__": None,
                            "__file__": path, "__loader__": loader, "__package__": None, "__spec__": None})
    if path is None:
        del module.__dict__["__file__"]


class Program:
    """The generated program as seen so far, and the state shared by its batches.

    Its text so far is also a real file in the working directory, the name its code is compiled under, as a
    script's is: `inspect.getsource`, logging's `%(filename)s`, multiprocessing's spawn and tracebacks after
    `linecache.clearcache()` read it."""

    def __init__(self, name=FILENAME, module=None, directory=None):
        self.name = name
        file = program_file(name)
        self.path = None if file is None or directory is None else os.path.join(directory, file)
        self.filename = self.path or name
        self.lines = []  # every line of the program so far, each ending in "\n"
        self.flags = 0  # __future__ compiler flags in force
        self.future_allowed = True  # only a docstring/__future__ imports ran so far
        self.seen_stmt = False
        self.declares_global = False  # a `global` statement so far: the compiler checks it across statements
        if module is None:
            module = types.ModuleType("__main__")
            _main_namespace(module, self.path)
        elif self.path is not None:
            module.__dict__["__file__"] = self.path
        self.module = module
        sys.modules["__main__"] = module

    def register(self, code, first_line):
        """Place `code` at `first_line` in the program text and (re)publish it to
        linecache and its file: the program may have cleared the cache or removed the file."""
        new = _LINE.findall(code)
        if new and not new[-1].endswith(("\n", "\r")):  # a lone \r ends its line: the text stays as written
            new[-1] += "\n"
        start = first_line - 1
        if len(self.lines) < start:
            self.lines.extend(["\n"] * (start - len(self.lines)))
        self.lines[start:start + len(new)] = new
        self._publish()
        if self.path is not None:
            try:
                with open(self.path, "w", encoding="utf-8", newline="") as file:
                    file.write("".join(self.lines))
            except (OSError, UnicodeError):
                pass  # the program made its directory unwritable, say: the text still is in linecache

    def _publish(self):
        lines = self.lines
        linecache.cache[self.filename] = (sum(map(len, lines)), None, lines, self.filename)

    def compile(self, code, first_line):
        """Compile one batch so that line numbers are those of the whole program, and refuse it if the
        whole program so far is one the compiler refuses (a `global x` after `x` was assigned)."""
        seen_before = self.seen_stmt
        first_is_future = False
        if self.future_allowed or "__future__" in code:
            first_is_future = self._check_futures(code, first_line)
        self.declares_global = self.declares_global or "global" in code
        if self.declares_global and seen_before:
            _compile("".join(self.lines), self.filename, self.flags)
        if seen_before and not first_is_future and first_line >= 2:
            # A leading string in a later batch is not the module docstring of the
            # whole program; the `pass` keeps compile() from storing it as __doc__.
            padding = "\n" * (first_line - 2) + "pass\n"
        else:
            padding = "\n" * (first_line - 1)
        compiled = _compile(padding + code, self.filename, self.flags)
        self.flags |= compiled.co_flags & FUTURE_FLAGS
        return compiled

    def function(self, compiled):
        """The batch as a function over the program's globals, bound to the builtins it started with:
        a script's module frame keeps its builtins even after it assigns `__builtins__`, while the
        functions it defines afterwards take the new value, as they do here."""
        namespace = self.module.__dict__
        own = namespace.get("__builtins__", namespace)
        namespace["__builtins__"] = builtins
        try:
            return types.FunctionType(compiled, namespace)
        finally:
            if own is namespace:
                del namespace["__builtins__"]
            else:
                namespace["__builtins__"] = own

    def _check_futures(self, code, first_line):
        """A `from __future__` import after other statements is a SyntaxError in the
        whole program even when it opens its own batch, so track whether the program
        so far is only a docstring and future imports (usually: the first batch).
        Returns whether the batch opens with a future import."""
        tree = _compile("\n" * (first_line - 1) + code, self.filename, _ast.PyCF_ONLY_AST)
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


FIGURE_BACKEND = "eager_figures"
MAX_FIGURE_BYTES = 2_000_000  # a PNG past this is not sent: its place says so on stderr
# The backend's source, run when the program imports matplotlib (never before: it costs nothing otherwise).
# Like Jupyter's inline backend, show() returns the open figures and closes them.
_BACKEND_SOURCE = """
from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase, _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg


class FigureManagerEager(FigureManagerBase):
    def show(self):
        _send(self.canvas.figure, keeps_open=True)


class FigureCanvasEager(FigureCanvasAgg):
    manager_class = FigureManagerEager


@_Backend.export
class _BackendEager(_Backend):
    FigureCanvas = FigureCanvasEager
    FigureManager = FigureManagerEager

    @staticmethod
    def show(*args, **kwargs):
        for manager in Gcf.get_all_fig_managers():
            _send(manager.canvas.figure)
        Gcf.destroy_all()
"""


class Figures:
    """Figures the program shows come back to the session as PNGs, in their place among its output.

    matplotlib chooses its backend when pyplot is first imported, so a one-shot import hook sets ours
    right after matplotlib itself is imported: a program that never imports it pays nothing, one that
    chooses a backend of its own (`matplotlib.use`) keeps it, and a spawned child process, which has
    no hook, gets matplotlib's default."""

    def __init__(self, request_fd, reply_fd, pid):
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.pid = pid
        self.shown = weakref.WeakSet()  # figures shown with fig.show(), which stay open: not returned again

    def install(self):
        sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib":
            return None
        sys.meta_path.remove(self)
        spec = sys.modules["_frozen_importlib_external"].PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            backend = types.ModuleType(FIGURE_BACKEND)

            def build(name):  # on pyplot's first use of the backend: what it imports costs nothing before
                del backend.__getattr__
                exec(_BACKEND_SOURCE, backend.__dict__)
                return getattr(backend, name)

            backend._send, backend.__getattr__ = self.send, build
            sys.modules[FIGURE_BACKEND] = backend
            if "MPLBACKEND" not in os.environ:
                module.rcParams["backend"] = "module://" + FIGURE_BACKEND

        spec.loader.exec_module = exec_module
        return spec

    def send(self, figure, keeps_open=False):
        """Render `figure` and send it after every byte the program printed before it, and before any it
        prints after."""
        if os.getpid() != self.pid:
            return  # a forked child's figure: the control pipe is the runner's
        if keeps_open:
            self.shown.add(figure)
        import io

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        png = buffer.getvalue()
        _flush_streams()
        if len(png) > MAX_FIGURE_BYTES:
            sys.stderr.write("[eager: a figure of %d bytes is over the limit of %d]\n" % (len(png), MAX_FIGURE_BYTES))
            _flush_streams()
            return
        import base64

        send(self.reply_fd, {"op": "figure", "png": base64.b64encode(png).decode("ascii")})
        # Wait until the session has it: the output the program prints next must not overtake it (they
        # travel on different pipes).
        if recv(self.request_fd) is None:
            os._exit(0)  # the executor went away

    def send_open(self):
        """At the program's end: the figures it left open, as a notebook returns them."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or sys.modules.get(FIGURE_BACKEND) is None:
            return
        try:
            if pyplot.get_backend() != "module://" + FIGURE_BACKEND:
                return
            for number in pyplot.get_fignums():
                figure = pyplot.figure(number)
                if figure not in self.shown:
                    self.send(figure)
            pyplot.close("all")
        except BaseException as exc:  # the program's own figures may fail to render: say so, as python would not
            sys.stderr.write("[eager: open figures could not be rendered: %r]\n" % (exc,))


class Preloaded:
    """Modules a warm interpreter imported before the program, hidden from it until it imports them.

    Importing numpy and pandas is the most common first statement of data-science code and costs
    hundreds of ms; a warm interpreter pays it while it waits. The program must not tell, except in
    time: what each preload added to `sys.modules` is taken out again, with the warning filters it
    added and the atexit handlers it registered, and all of it comes back when the program imports
    one of its modules (the earlier preloads too, which it may import). The modules are the same
    objects, `__spec__` included."""

    def __init__(self):
        self.groups = []  # (modules by name, warning filters added, atexit registrations), in import order
        self._spec = None

    def load(self, names):
        atexit = __import__("atexit")
        register, initial_filters = atexit.register, list(warnings.filters)
        for name in names:
            known, filters = set(sys.modules), list(warnings.filters)
            registrations = []
            atexit.register = lambda func, *args, **kwargs: registrations.append((func, args, kwargs)) or func
            try:
                __import__(name)
            except Exception:
                pass  # not installed in this interpreter, say: the program's own import will tell it
            finally:
                atexit.register = register
            modules = {key: sys.modules[key] for key in list(sys.modules) if key not in known}
            if modules:
                self.groups.append((modules, [f for f in warnings.filters if f not in filters], registrations))
        for modules, _, _ in self.groups:  # all loaded first: a later preload imports the earlier ones
            for key in modules:
                del sys.modules[key]
        warnings.filters[:] = initial_filters
        warnings._filters_mutated()
        if self.groups:
            sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        for modules, _, _ in self.groups:
            if name in modules:
                return sys.modules["_frozen_importlib"].ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        for modules, _, _ in self.groups:
            if spec.name in modules:
                module = modules[spec.name]
                self._spec = module.__spec__  # the import system replaces it with ours before exec_module
                return module
        return None

    def exec_module(self, module):
        """The module gets its own spec back, and its group comes back."""
        module.__spec__ = self._spec
        for index, (modules, _, _) in enumerate(self.groups):
            if modules.get(module.__name__) is module:
                self._restore(index)
                return

    def _restore(self, through):
        atexit = __import__("atexit")
        for modules, added, registrations in self.groups[:through + 1]:
            for key, module in modules.items():
                sys.modules.setdefault(key, module)
            warnings.filters[:0] = added
            warnings._filters_mutated()
            for func, args, kwargs in registrations:
                atexit.register(func, *args, **kwargs)
        del self.groups[:through + 1]
        if not self.groups and self in sys.meta_path:
            sys.meta_path.remove(self)


class Runner:
    """The batches of one interpreter's programs, and its end."""

    def __init__(self, directory, request_fd, reply_fd):
        self.directory = directory
        self.program = Program(FILENAME, directory=directory)
        self.tracing = Tracing()
        self.uncaught = None  # the exception that ended the program, for sys.excepthook at its end
        self.pid = os.getpid()
        self.figures = Figures(request_fd, reply_fd, self.pid)

    def begin(self, name):
        """A new program (a conversation's next turn) in the same globals."""
        if name != self.program.name:
            self.program = Program(name, self.program.module, self.directory)

    def run_batch(self, code, first_line):
        started = _time_ns()
        error = None
        self.uncaught = None  # an earlier turn's error was that turn's end, not this program's
        program, tracing = self.program, self.tracing
        try:
            program.register(code, first_line)
            compiled = program.compile(code, first_line)
        except BaseException as exc:
            error = describe(exc, exc.__traceback__, program, globals())
            error["compile"] = isinstance(exc, SyntaxError)
            exc = None
        if error is None:
            try:
                batch = program.function(compiled)
                tracing.resume(compiled)
                AUDIT.listening = True
                try:
                    batch()
                finally:
                    # first, before any call of ours: the program's trace and profile functions see none of them
                    AUDIT.listening = False
                    tracing.profile = _getprofile()
                    _unprofile()
                    tracing.trace = _gettrace()
                    _settrace(None)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt are results too
                self.uncaught = None if isinstance(exc, SystemExit) else exc
                error = describe(exc, exc.__traceback__, program, globals())
                exc = None
        _flush_streams()
        if os.getpid() != self.pid:
            # The program forked and this is the child falling out of the batch: it must
            # not answer on the control pipe (the real runner does); end it quietly.
            os._exit(0 if error is None else 1)
        return {"op": "done", "ok": error is None, "error": error,
                "started_ns": started, "finished_ns": _time_ns()}

    def end_program(self):
        """The program's end, while the session still listens: an uncaught exception goes to a
        sys.excepthook the program set (the default one's traceback is the session's error already),
        and the figures it left open are returned."""
        exc, self.uncaught = self.uncaught, None
        hook = sys.excepthook
        if exc is not None and hook is not sys.__excepthook__:
            try:
                hook(type(exc), exc, exc.__traceback__)
            except BaseException as hook_exc:
                sys.stderr.write("Error in sys.excepthook:\n" + "".join(_format_exception(hook_exc))
                                 + "\nOriginal exception was:\n" + "".join(_format_exception(exc)))
        exc = None
        self.figures.send_open()
        _flush_streams()

    def end(self):
        """End the interpreter as python ends it after a script, in its order: non-daemon threads are
        joined, atexit handlers run (weakref.finalize's among them), then the program's globals are
        cleared so what only they held is finalized. Python would go on to tear down every module, which
        costs a data-science stack a few hundred ms of CPU and prints nothing the program wrote, so the
        runner exits there."""
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit = sys.modules.get("atexit") or __import__("atexit")
        atexit._run_exitfuncs()
        self.program.module.__dict__.clear()
        _flush_streams()
        os._exit(0)


def main():
    req_fd, rep_fd = int(sys.argv[1]), int(sys.argv[2])
    preload = [name for name in (sys.argv[3] if len(sys.argv) > 3 else "").split(",") if name]
    for fd in (req_fd, rep_fd):
        os.set_inheritable(fd, False)  # subprocesses of the program must not hold them
    directory = os.getcwd()
    sys.argv = [PROGRAM_FILE]
    sys.path.insert(0, directory)  # like the script's own directory for `python program.py`
    AUDIT.install()
    runner = Runner(directory, req_fd, rep_fd)
    runner.figures.install()
    Preloaded().load(preload)
    send(rep_fd, {"op": "ready", "pid": runner.pid, "python": sys.version})
    while True:
        msg = recv(req_fd)
        if msg is None:
            return
        op = msg.get("op")
        if op == "run":
            runner.begin(msg.get("filename", FILENAME))
            reply = runner.run_batch(msg["code"], int(msg["first_line"]))
        elif op == "finish":
            runner.end_program()
            send(rep_fd, {"op": "finishing", "id": msg.get("id")})
            os.close(req_fd)
            os.close(rep_fd)
            runner.end()
        else:
            reply = {"op": "error", "message": "unknown op %r" % (op,)}
        reply["id"] = msg.get("id")
        send(rep_fd, reply)


if __name__ == "__main__":
    main()
