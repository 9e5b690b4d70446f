"""One persistent Python interpreter subprocess, driven batch by batch.

The executor job of a session owns one `Interpreter`: every batch of the generated
program runs in the same child process, so state carries over as it would in one
script. The child runs `_runner.py` (standard library only) under a python the
deployer chooses; this module is the parent side.

Why it is built this way:
- Output must reach the session while the batch is still running (that is the point
  of executing early), so the child's stdout/stderr are pipes read here in one
  `selectors` loop together with the control pipe; no threads, no polling.
- "Nothing hung": the loop also watches a pidfd of the child, so a segfault, an
  `os._exit` or a kill is seen at once, even if a grandchild still holds the pipes;
  a closed stdout only ends that stream; a timeout kills the child.
- "Nothing leaks": the child runs in a `sandbox.Sandbox` (a jail of namespaces, a cgroup,
  a read-only root and seccomp, its own slot uid, where the host allows them), dies with
  its parent (PR_SET_PDEATHSIG, which covers an RQ work-horse killed on timeout, where no
  `finally` runs), and `close()` kills everything of its sandbox and frees its private
  working directory. If `run()` is left by any exception raised in the parent (for example RQ's
  JobTimeoutException from SIGALRM), the child is killed before the exception propagates.
- The child never sees the parent's environment (API keys, Redis URL): it gets a
  minimal one.
- Output is bounded per interpreter (per turn, for a conversation's: `new_output_budget`): past
  `output_bytes` it is cut with a marker and drained unread, so a program printing forever costs
  nothing but its batch time.
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import selectors
import signal
import subprocess
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from eager.common.config import Settings
from eager.executor_pool._runner import FILENAME, MAX_FIGURE_BYTES
from eager.executor_pool.sandbox import Sandbox, SandboxConfig, SandboxError
from eager.common.errors import EagerError

RUNNER = Path(__file__).with_name("_runner.py")
MAX_FRAME = 1 << 30  # a reply larger than this is a protocol violation
READ_SIZE = 1 << 16

OutputCallback = Callable[[str, str], None]
FigureCallback = Callable[[bytes], None]


class InterpreterError(EagerError):
    """The interpreter, not the program, failed; the Interpreter is unusable after it."""


class InterpreterDied(InterpreterError):
    """The child exited during a batch (segfault, os._exit, killed, broken protocol)."""

    def __init__(self, returncode: int | None, detail: str = "") -> None:
        self.returncode = returncode
        if returncode is not None and returncode < 0:
            try:
                how = f"killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        super().__init__(f"interpreter {how}" + (f": {detail}" if detail else ""))


class LimitExceeded(InterpreterDied):
    """The kernel killed the child for exceeding a limit of its sandbox (CPU time, or the memory of the whole tree)."""


class BatchTimeout(InterpreterError):
    """A batch ran longer than its timeout; the child has been killed."""


@dataclass(frozen=True)
class CodeError:
    """An exception raised by the program (its result, not a failure of ours).

    `line` is a line of the whole generated program: a SyntaxError's own line,
    otherwise the deepest traceback frame in the program. `traceback` is formatted
    as running the program as a script would print it: its frames name the program's file in the
    interpreter's working directory (`program.py`; `program_<k>.py` for a conversation's turn k).
    """

    type: str
    message: str
    line: int | None
    traceback: str
    compiling: bool = False  # raised by compiling the program, not by running it: python would have run nothing


@dataclass(frozen=True)
class BatchResult:
    """Outcome of one batch; the stamps (time.time_ns, taken in the child) bracket
    compiling and running it, so they measure execution, not our overhead."""

    ok: bool
    error: CodeError | None
    started_ns: int
    finished_ns: int


def default_env(workdir: str) -> dict[str, str]:
    """The child's environment unless the caller adds to it: nothing inherited."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def truncation_marker(limit: int) -> str:
    return f"\n[eager: output truncated after {limit} bytes]\n"


def _frame(message: dict[str, Any]) -> bytes:
    """A control message as the runner reads it: 4-byte big-endian length, then JSON."""
    body = json.dumps(message).encode("utf-8")
    return len(body).to_bytes(4, "big") + body


def _cleanup(proc: subprocess.Popen[bytes] | None, fds: list[int], box: Sandbox | None) -> None:
    """Everything close() undoes; also the finalizer if an Interpreter is dropped."""
    if proc is not None and box is not None:
        box.kill(proc)
    if proc is not None:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
    if box is not None:
        box.release()


class Interpreter:
    """A persistent child interpreter that runs one session's program batch by batch.

    Not thread-safe. Call start() on a thread that outlives the interpreter: the
    kernel's parent-death signal fires when the *thread* that forked the child ends.
    """

    def __init__(self, python: str = "", env: dict[str, str] | None = None,
                 start_timeout: float = 30.0, sandbox: SandboxConfig | None = None,
                 preload: tuple[str, ...] = ()) -> None:
        """`python` empty: the sandbox's default (see Sandbox.python). `sandbox` None: the limits configured
        in the environment. `preload`: modules imported before the program, hidden from it until it imports
        them itself (a warm interpreter's head start)."""
        self.python = python
        self.preload = preload
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.config = sandbox if sandbox is not None else SandboxConfig.from_settings(Settings.from_env())
        self._proc: subprocess.Popen[bytes] | None = None
        self._box: Sandbox | None = None
        self._workdir: str | None = None
        self._program_workdir: str | None = None
        self._isolation = "none"
        self._output_left = self.config.output_bytes
        self._fds: list[int] = []  # parent ends of the control pipes, and the pidfd
        self._sel: selectors.BaseSelector | None = None
        self._req_w = self._rep_r = self._pidfd = -1
        self._reply_buf = bytearray()
        self._reply_eof = False
        self._exited = False
        self._outputs: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self._next_id = 0
        self._program = FILENAME  # the name batches are compiled under: a program's line numbers are its own
        self._dead: InterpreterError | None = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Started, not closed, and the child has not exited (a warm one may die while it waits)."""
        return self._proc is not None and self._dead is None and self._status() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def workdir(self) -> str | None:
        """The working directory (and HOME) as the program sees it: the path its tracebacks name."""
        return self._program_workdir

    @property
    def host_workdir(self) -> str | None:
        """The same directory as the executor reaches it (inside a jail: through /proc/<pid>/root)."""
        return self._workdir

    @property
    def uid(self) -> int | None:
        """The sandbox slot's uid, or None when running as the executor's own user."""
        return self._box.uid if self._box is not None else None

    @property
    def isolation(self) -> str:
        """The sandbox layers the child really got (sandbox.LAYERS joined by "+"), or "none"."""
        return self._isolation

    def _start(self) -> None:
        self._box = box = Sandbox.claim(self.config)
        self._finalizer = weakref.finalize(self, _cleanup, None, self._fds, box)
        python, self._program_workdir = box.python(self.python), box.workdir()
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self._req_w, self._rep_r = req_w, rep_r
        self._fds += [req_w, rep_r]
        try:
            self._proc = box.spawn(
                python, RUNNER, [str(req_r), str(rep_w), ",".join(self.preload)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**default_env(self._program_workdir), **self.extra_env}, pass_fds=(req_r, rep_w),
            )
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._workdir = box.host_view(self._proc.pid)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self._fds, box)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._sel = selectors.DefaultSelector()
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._outputs[fd] = (name, codecs.getincrementaldecoder("utf-8")(errors="replace"))
            self._sel.register(fd, selectors.EVENT_READ, name)
        for fd in (req_w, rep_r):
            os.set_blocking(fd, False)
        self._sel.register(rep_r, selectors.EVENT_READ, "reply")
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
            self._fds.append(self._pidfd)
            self._sel.register(self._pidfd, selectors.EVENT_READ, "exit")
        except (AttributeError, OSError):
            self._pidfd = -1  # no pidfd: the loop polls the child instead
        early: list[str] = []

        def keep(_name: str, text: str) -> None:
            if sum(map(len, early)) < 4096:
                early.append(text)

        try:
            reply = self._exchange(None, keep, time.monotonic() + self.start_timeout, "start")
        except InterpreterDied as exc:
            raise InterpreterDied(exc.returncode, "".join(early).strip()[-2000:] or "at start") from None
        if reply.get("op") != "ready":
            self._fail(InterpreterDied(self._status(), f"unexpected first message {reply!r:.200}"))
        self._isolation = box.isolation(self._proc.pid)

    def start(self) -> None:
        """Spawn the child and return once it reported ready. On failure nothing is
        left behind (`with Interpreter() as it:` does not call close() then)."""
        if self._proc is not None or self._finalizer is not None:
            raise RuntimeError("Interpreter.start() called twice")
        try:
            self._start()
        except SandboxError as exc:
            self.close()
            raise InterpreterError(f"sandbox: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the child's whole process tree and remove its working directory.
        Idempotent; safe in `finally`."""
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._finalizer is not None:
            self._finalizer()
        if self._dead is None:
            self._dead = InterpreterError("interpreter closed")

    def __enter__(self) -> Interpreter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def begin_program(self, filename: str) -> None:
        """The next batches form a new program in the same globals (line 1 again, `__future__` imports allowed),
        named `filename` in tracebacks: a conversation's next turn, or its setup code."""
        self._program = filename

    def new_output_budget(self) -> None:
        """A new turn of a conversation may print `output_bytes` again, whatever the previous turns printed."""
        self._output_left = self.config.output_bytes

    # -- running -----------------------------------------------------------------

    def run(self, code: str, first_line: int, on_output: OutputCallback,
            timeout: float | None = None, on_figure: FigureCallback | None = None) -> BatchResult:
        """Run one batch (complete top-level statements starting at program line
        `first_line`) in the persistent globals; stream its output to
        on_output(stream, text) as it is produced. Every byte written before the
        batch ended has been passed to on_output when this returns. Raises
        InterpreterDied / BatchTimeout when the child, not the program, fails.
        Output that background threads or processes wrote between batches is
        delivered during the next run(). A figure the program shows goes to on_figure(png) after
        all the output written before it."""
        if self._dead is not None:
            rc = self._dead.returncode if isinstance(self._dead, InterpreterDied) else None
            raise InterpreterDied(rc, f"unusable after: {self._dead}")
        if self._proc is None:
            raise RuntimeError("Interpreter.run() before start()")
        if first_line < 1:
            raise ValueError("first_line is 1-based")
        self._next_id += 1
        request = {"op": "run", "id": self._next_id, "code": code, "first_line": first_line, "filename": self._program}
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = self._exchange(request, on_output, deadline, "run", on_figure)
        try:
            if reply["op"] != "done" or reply["id"] != self._next_id:
                raise ValueError("not the answer to this batch")
            err = reply["error"]
            error = None if err is None else CodeError(
                type=str(err["type"]), message=str(err["message"]),
                line=None if err["line"] is None else int(err["line"]), traceback=str(err["traceback"]),
                compiling=bool(err.get("compile", False)))
            return BatchResult(ok=bool(reply["ok"]), error=error,
                               started_ns=int(reply["started_ns"]), finished_ns=int(reply["finished_ns"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._fail(InterpreterDied(self._status(), f"malformed reply ({exc}): {reply!r:.200}"))

    def finish(self, on_output: OutputCallback, timeout: float, on_figure: FigureCallback | None = None) -> None:
        """End the program as python ends a script, and wait (at most `timeout`) for the child to exit:
        sys.excepthook for an uncaught exception, non-daemon threads joined, atexit handlers, finalizers.
        What that prints is passed to on_output, with the last incomplete UTF-8 sequence as U+FFFD, and
        the figures the program left open to on_figure.
        Raises BatchTimeout (the child killed) if it does not exit in time; the Interpreter is done after."""
        if not self.alive:
            return
        deadline = time.monotonic() + timeout
        self._next_id += 1
        reply = self._exchange({"op": "finish", "id": self._next_id}, on_output, deadline, "shutdown", on_figure)
        if reply.get("op") != "finishing":
            self._fail(InterpreterDied(self._status(), f"unexpected answer to finish: {reply!r:.200}"))
        try:
            self._await_exit(on_output, deadline)
        except BaseException:
            self._kill()
            raise
        self._dead = InterpreterError("interpreter finished its program")  # close() kills what it left

    def _await_exit(self, on_output: OutputCallback, deadline: float) -> None:
        assert self._sel is not None
        while not self._exited and self._status() is None:
            wait = max(0.0, deadline - time.monotonic())
            if self._pidfd < 0:
                wait = min(wait, 0.05)
            for key, _mask in self._sel.select(wait):
                if key.data == "exit":
                    self._exited = True
                elif key.data in ("stdout", "stderr"):
                    self._read_output(key.fd, on_output)
                elif key.data == "reply":
                    self._read_reply()
            if time.monotonic() >= deadline and not self._exited:
                self._kill()
                self._drain(on_output, final=True)
                self._fail(BatchTimeout("the program did not end within its time after its last statement "
                                        "(a non-daemon thread or an atexit handler still running); interpreter killed"))
        self._drain(on_output, final=True)

    def _exchange(self, request: dict[str, Any] | None, on_output: OutputCallback,
                  deadline: float | None, what: str, on_figure: FigureCallback | None = None) -> dict[str, Any]:
        """Send `request`, then pump output until the reply frame arrives. Any
        exception leaving here (ours or the caller's) kills the child first."""
        try:
            return self._pump(request, on_output, deadline, what, on_figure)
        except BaseException as exc:
            if not isinstance(exc, InterpreterError) or self._dead is None:
                self._dead = exc if isinstance(exc, InterpreterError) else InterpreterError(
                    f"interpreter killed after {type(exc).__name__} during {what}")
                self._kill()
            raise

    def _pump(self, request: dict[str, Any] | None, on_output: OutputCallback,
              deadline: float | None, what: str, on_figure: FigureCallback | None) -> dict[str, Any]:
        assert self._sel is not None and self._proc is not None
        pending = b""
        if request is not None:
            pending = _frame(request)
            pending = pending[self._write(pending):]
            if pending:
                self._sel.register(self._req_w, selectors.EVENT_WRITE, "request")
        try:
            while True:
                reply = self._take_reply(on_output, on_figure)
                if reply is not None:
                    break
                if self._exited or self._reply_eof or (self._pidfd < 0 and self._status() is not None):
                    self._read_reply()  # the child may have replied just before exiting
                    reply = self._take_reply(on_output, on_figure)
                    if reply is not None:
                        break
                    self._drain(on_output, final=True)
                    self._died(f"during {what}")
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._pidfd < 0:
                    wait = 0.05 if wait is None else min(wait, 0.05)
                for key, _mask in self._sel.select(wait):
                    tag = key.data
                    if tag == "reply":
                        self._read_reply()
                    elif tag == "exit":
                        self._exited = True
                    elif tag == "request":
                        pending = pending[self._write(pending):]
                        if not pending:
                            self._sel.unregister(self._req_w)
                    else:
                        self._read_output(key.fd, on_output)
                if deadline is not None and time.monotonic() >= deadline and self._take_frame(peek=True) is None:
                    self._kill()  # first, so a program flooding its output cannot delay the drain
                    self._drain(on_output, final=True)
                    what_timed_out = "start" if what == "start" else "batch"
                    self._fail(BatchTimeout(f"{what_timed_out} exceeded its timeout; interpreter killed"))
        finally:
            if pending and self._sel is not None and self._req_w in self._sel.get_map():
                self._sel.unregister(self._req_w)
        self._drain(on_output, final=False)
        return reply

    def _write(self, data: bytes) -> int:
        try:
            return os.write(self._req_w, data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            self._exited = True  # the child closed its end: it is gone or going
            return len(data)

    def _read_reply(self) -> None:
        while not self._reply_eof:
            try:
                chunk = os.read(self._rep_r, READ_SIZE)
            except BlockingIOError:
                return
            if not chunk:
                self._reply_eof = True
                if self._sel is not None and self._rep_r in self._sel.get_map():
                    self._sel.unregister(self._rep_r)
                return
            self._reply_buf += chunk

    def _take_reply(self, on_output: OutputCallback, on_figure: FigureCallback | None) -> dict[str, Any] | None:
        """The next frame that answers the request; figures on the way are delivered in their place: the
        runner flushed the program's output before sending one, so draining the pipes first keeps the order."""
        while (frame := self._take_frame()) is not None:
            if frame.get("op") != "figure":
                return frame
            self._drain(on_output, final=False)
            try:
                png = base64.b64decode(str(frame["png"]), validate=True)
            except (KeyError, ValueError):
                self._fail(InterpreterDied(self._status(), "malformed figure frame"))
            if len(png) > min(self._output_left, MAX_FIGURE_BYTES):  # the runner refuses larger: one message carries it
                self._output_left = 0
                on_output("stderr", f"\n[eager: a figure of {len(png)} bytes is past the output limit]\n")
            elif on_figure is not None:
                self._output_left -= len(png)
                on_figure(png)
            self._send_frame({"op": "figure_received"})
        return None

    def _send_frame(self, message: dict[str, Any]) -> None:
        """A small frame to a runner that waits for it: its request pipe is empty then, so it fits at once."""
        frame = _frame(message)
        if self._write(frame) != len(frame):
            self._fail(InterpreterDied(self._status(), "the runner did not take an acknowledgement"))

    def _take_frame(self, peek: bool = False) -> dict[str, Any] | None:
        buf = self._reply_buf
        if len(buf) < 4:
            return None
        size = int.from_bytes(buf[:4], "big")
        if size > MAX_FRAME:
            self._fail(InterpreterDied(self._status(), "malformed reply frame"))
        if len(buf) < 4 + size:
            return None
        if peek:
            return {}
        body = bytes(buf[4:4 + size])
        del buf[:4 + size]
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self._fail(InterpreterDied(self._status(), "malformed reply"))
        return msg

    def _read_output(self, fd: int, on_output: OutputCallback) -> int:
        """Read what one output pipe holds now (at most READ_SIZE); returns the byte
        count, or -1 at EOF (the program closed the stream, or the child is gone)."""
        name, decoder = self._outputs[fd]
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return 0
        if not data:
            if self._sel is not None and fd in self._sel.get_map():
                self._sel.unregister(fd)
            text = decoder.decode(b"", final=True)
            if text:
                on_output(name, text)
            return -1
        if self._output_left <= 0:
            return len(data)  # past the cap: drained unread so the program never blocks on a full pipe
        kept = data[:self._output_left]
        self._output_left -= len(kept)
        cut = self._output_left <= 0 and len(kept) < len(data)
        text = decoder.decode(kept, final=cut)
        if cut:
            text += truncation_marker(self.config.output_bytes)
        elif self._output_left <= 0:
            self._output_left = 1  # exactly at the cap: only a further byte proves a cut
        if text:
            on_output(name, text)
        return len(data)

    def _drain(self, on_output: OutputCallback, final: bool) -> None:
        """Deliver what the output pipes hold now. A short read proves the pipe was
        empty at that moment, so everything written before the reply is delivered
        even if a background thread keeps writing."""
        assert self._sel is not None
        open_fds = [fd for fd in self._outputs if fd in self._sel.get_map()]
        for fd in open_fds:
            while self._read_output(fd, on_output) == READ_SIZE:
                pass
            if final:
                name, decoder = self._outputs[fd]
                text = decoder.decode(b"", final=True)
                if text:
                    on_output(name, text)

    def _kill(self) -> None:
        if self._proc is not None and self._box is not None:
            self._box.kill(self._proc)

    def _status(self) -> int | None:
        """The child's exit status (as Popen.returncode), None while it runs. In a forked
        copy of the starting process (a work horse handed a warm interpreter) waitpid
        cannot see the child and Popen would call it dead with status 0; the kernel still
        shows a zombie's status in /proc/<pid>/stat until its parent reaps it."""
        proc = self._proc
        if proc is None:
            return None
        if self._box is None or self._box.owner:
            return proc.poll()
        try:
            with open(f"/proc/{proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return os.waitstatus_to_exitcode(int(fields[-1])) if fields[0] == b"Z" else None

    def _died(self, detail: str) -> NoReturn:
        """The child exited or dropped the control pipe: give it a moment to finish
        exiting so its own status is reported, then make sure it is gone."""
        assert self._proc is not None and self._box is not None
        if self._box.owner:
            try:
                self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass  # alive without a control pipe: killed below
            status = self._proc.returncode
        else:
            deadline = time.monotonic() + 1.0
            status = self._status()
            while status is None and time.monotonic() < deadline:
                time.sleep(0.002)  # no waitpid for a forked copy: poll /proc, bounded
                status = self._status()
        self._kill()
        limit = self._box.exceeded(status)
        if limit is not None:
            self._fail(LimitExceeded(status, limit))
        self._fail(InterpreterDied(status, detail))

    def _fail(self, exc: InterpreterError) -> NoReturn:
        """Kill the child, remember why, raise: an interpreter fails only once."""
        self._dead = exc
        self._kill()
        raise exc
