"""One session's execution: the RQ job that feeds its chunks through the gate into one interpreter.

The job is enqueued when the session is submitted, so the work-horse fork and the
interpreter start are paid while the model is still on its first token. Errors of the
generated code are results (a terminal Summary), never a failed job; the job fails only
if the executor itself breaks, and even then it publishes a terminal Summary first.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS, connect
from eager.common.heartbeat import process_name
from eager.common.lease import RENEWALS_PER_PERIOD, held
from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    Cancel,
    ChunkReady,
    CodeStatus,
    ExecutionError,
    Figure,
    Gate,
    GateAction,
    GateDecision,
    Keys,
    Message,
    Output,
    ProtocolError,
    SessionSpec,
    SessionStarted,
    SessionStatus,
    Summary,
    TurnRequest,
    clip,
    decode,
    fitting,
)
from eager.common.streams import decode_entries, end_session, publish
from eager.executor_pool.conversation import Interpreters, SetupFailed, TurnWait
from eager.executor_pool.gate import Batch, BatchLimits, GateError, GateState
from eager.executor_pool.interpreter import (
    BatchTimeout,
    CodeError,
    Interpreter,
    InterpreterDied,
    InterpreterError,
    LimitExceeded,
)
from eager.executor_pool.static_gate import Escape, Rules

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DETECTOR_GRACE_LEASES = 3  # no detector for this many lease periods: none is coming (a takeover needs about one)

# The program ran to its end, by itself: python would now end the interpreter, and show what that prints.
_PROGRAM_ENDS = frozenset({SessionStatus.OK, SessionStatus.ERROR, SessionStatus.EXITED})

_END_STATUS = {
    CodeStatus.COMPLETE: SessionStatus.OK,
    CodeStatus.NO_CODE: SessionStatus.NO_CODE,
    CodeStatus.GENERATION_FAILED: SessionStatus.MODEL_ERROR,
    CodeStatus.CANCELLED: SessionStatus.CANCELLED,
    CodeStatus.REJECTED: SessionStatus.REJECTED,
}


# The positional job arguments clients sent before the session spec, in their order (the rest came as keywords).
_UNVERSIONED = ("session_id", "gate", "submitted_ns", "batch_chunks", "batch_wait_ms")


def spec_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SessionSpec:
    """The session spec an executor job carries: its one argument, encoded by the protocol; or the positional
    arguments (and keywords) of a client older than the spec, read into one. Anything else is refused clearly."""
    if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
        spec = decode(args[0])
        if not isinstance(spec, SessionSpec):
            raise ProtocolError(f"an executor job carries a {spec.kind} message, not a session spec")
        return spec
    if 3 <= len(args) <= len(_UNVERSIONED) and isinstance(args[0], str):
        turn = dict(zip(_UNVERSIONED, args))
        job = {name: kwargs.pop(name) for name in ("conversation", "setup", "max_turns") if name in kwargs}
        try:
            return SessionSpec(TurnRequest(**turn, **kwargs), **job)
        except TypeError as exc:
            raise ProtocolError(f"unreadable executor job arguments from an older client: {exc}") from exc
    raise ProtocolError(f"unreadable executor job arguments: {len(args)} positional, keywords {sorted(kwargs)}")


def run_session(*args: Any, **kwargs: Any) -> str:
    """The RQ job function: runs the session its spec names and returns the (last turn's) terminal status. With a
    conversation, the job then runs that conversation's later turns, up to `max_turns`, in the same interpreter."""
    spec = spec_of(args, kwargs)
    settings = Settings.from_env()
    client, keys = connect(settings), Keys(settings.namespace)
    interpreters = Interpreters(settings, setup=spec.setup)
    turn, conversation = spec.first, spec.conversation
    turns = None if conversation is None else TurnWait(client, keys, settings, conversation)
    with contextlib.ExitStack() as stack:
        stack.callback(interpreters.close)
        if conversation is not None:
            stack.enter_context(held(client, keys.conversation_lease(conversation, "executor"), process_name(),
                                     settings.lease_s))
        number = 1
        while True:
            # the last turn's interpreter goes with it
            interpreters.keep = turns is not None and number < spec.max_turns
            with held(client, keys.lease(turn.session_id, "executor"), process_name(), settings.lease_s):
                status = SessionRunner(client, keys, settings, interpreters, turn, number).run()
            if turns is None or number >= spec.max_turns or (turn := turns.next_turn()) is None:
                return status.value
            number += 1


@dataclass
class _Stop:
    status: SessionStatus
    error: dict | None = None
    detail: str | None = None


@dataclass
class SessionRunner:
    client: redis.Redis
    keys: Keys
    settings: Settings
    interpreters: Interpreters
    request: TurnRequest  # the session, its gate and its own limits (batching, timeout), if it chose any
    turn: int = 1  # its place in its conversation
    gate: GateState = field(init=False)
    _cursors: dict[str, str] = field(init=False)
    _stdout: list[str] = field(default_factory=list)
    _execution_end_ns: int | None = None
    _busy_ns: int = 0
    _cancel: Cancel | None = None
    _detector_absent_since: int = field(init=False)
    _detector_checked_ns: int = 0
    _last_batch: int | None = None  # the number of the batch that ran last
    _cancel_sent: bool = False
    _error_published: bool = False
    _figures: int = 0
    _started_ns: int = field(default_factory=now_ns)  # the job began: the end of the session's wait in the queue

    def __post_init__(self) -> None:
        chunks, wait_ms = self.request.batch_chunks, self.request.batch_wait_ms
        limits = BatchLimits(chunks or self.settings.gate_batch_chunks,
                             self.settings.gate_batch_wait_ms if wait_ms is None else wait_ms)
        rules = Rules.parse(self.settings.gate_preset, self.settings.gate_escapes, self.settings.gate_hold)
        self.gate = GateState(self.request.gate, rules, limits)
        session_id = self.request.session_id
        self._cursors = {self.keys.chunks(session_id): "0-0", self.keys.cancel(session_id): "0-0"}
        # counted from the job's start, not the request's: a session that waited in the queue finds its detector
        # long done (and its lease released), with all its chunks already in the stream for the first read
        self._detector_absent_since = self._started_ns

    @property
    def _deadline_ns(self) -> int:
        return self.request.submitted_ns + int(self.settings.session_timeout(self.request.timeout_s) * 1e9)

    def _publish(self, message: Message) -> None:
        publish(self.client, self.keys.events(self.request.session_id), message, self.settings.key_ttl_s)

    def run(self) -> SessionStatus:
        interpreters = self.interpreters
        try:
            interpreter, warm, kept = interpreters.acquire(self.turn, (self._deadline_ns - now_ns()) / 1e9)
            self._publish(SessionStarted(socket.gethostname(), interpreter.pid, self.request.gate, now_ns(), warm=warm,
                                         isolation=interpreter.isolation, turn=self.turn, kept_state=kept))
            if "netns" not in interpreter.isolation:  # the network is reachable: using it would leave the sandbox
                self.gate = GateState(self.request.gate, self.gate.rules.opening(Escape.NETWORK), self.gate.limits)
            stop = self._execute(interpreter)
            if stop.status in _PROGRAM_ENDS and self._last_batch is not None and not interpreters.keep:
                self._stop_model(stop)  # first: neither the model nor the error waits for the program's end
                stop = self._end_program(interpreter, stop)
        except redis.RedisError as exc:
            log.exception("session %s lost Redis", self.request.session_id)
            stop = _Stop(SessionStatus.FAILED, detail=f"lost Redis mid-session ({type(exc).__name__}: {exc}); "
                                                      "what the session had published may be gone")
        except SetupFailed as exc:
            stop = _Stop(SessionStatus.FAILED, detail=str(exc))
        except (ProtocolError, GateError, OSError, InterpreterError) as exc:
            log.exception("session %s failed in the executor", self.request.session_id)
            stop = _Stop(SessionStatus.FAILED, detail=f"executor failure: {exc!r}")
        finally:
            interpreters.release()
        summary = self._finish(stop, kept=interpreters.holds_living())
        return summary.status

    def _execute(self, interpreter: Interpreter) -> _Stop:
        while True:
            batch = self.gate.next_batch(now_ns()) if self.request.execute else None
            if batch is not None:
                stop = self._run_batch(interpreter, batch)
                if stop is not None:
                    return stop
                self._read(block_ms=None)
                continue
            if not self.request.execute and self.gate.end is not None:  # whatever code it wrote, none of it was to run
                status = _END_STATUS.get(self.gate.end.status, SessionStatus.OK)
                return self._ended(SessionStatus.OK if status is SessionStatus.NO_CODE else status)
            if self.gate.invalid is not None and self.request.execute:
                invalid = self.gate.invalid
                return _Stop(SessionStatus.SYNTAX_ERROR, _error_dict(invalid.error_type, invalid.message, invalid.line, ""))
            if self.gate.end is not None:
                return self._ended(_END_STATUS[self.gate.end.status])
            if self._cancel is not None:
                return _Stop(SessionStatus.CANCELLED, detail=self._cancelled_by())
            remaining_ms = (self._deadline_ns - now_ns()) // 1_000_000
            if remaining_ms <= 0:
                return _Stop(SessionStatus.TIMEOUT,
                             detail=f"session exceeded {self.settings.session_timeout(self.request.timeout_s)} s")
            if self._without_detector(now_ns()):
                return _Stop(SessionStatus.FAILED, detail=f"no detector held the session for "
                             f"{DETECTOR_GRACE_LEASES * self.settings.lease_s} s (request lost, or no detector running)")
            block_ms = min(remaining_ms, MAX_BLOCK_MS)
            wake_ns = self.gate.wake_at_ns()
            if wake_ns is not None:  # the batch policy's wait runs out before a message may come
                block_ms = max(1, min(block_ms, -(-(wake_ns - now_ns()) // 1_000_000)))
            self._read(block_ms=block_ms)

    def _ended(self, status: SessionStatus) -> _Stop:
        """Generation and detection are over: the status they make, and why, naming who cancelled if one did."""
        assert self.gate.end is not None
        if status is SessionStatus.CANCELLED and self._cancel is not None:
            return _Stop(status, detail=self._cancelled_by())
        return _Stop(status, detail=self.gate.end.generation.error)

    def _cancelled_by(self) -> str:
        assert self._cancel is not None
        return f"cancelled by {self._cancel.by}: {self._cancel.reason}"

    def _without_detector(self, now: int) -> bool:
        """Whether no detector has held the session's lease for a while (checked a few times per period).
        A detector that dies is taken over within about a period, so only a long absence ends the session."""
        if now - self._detector_checked_ns < self.settings.lease_s / RENEWALS_PER_PERIOD * 1e9:
            return False
        self._detector_checked_ns = now
        if self.client.exists(self.keys.lease(self.request.session_id, "detector")):
            self._detector_absent_since = now
        return now - self._detector_absent_since > DETECTOR_GRACE_LEASES * self.settings.lease_s * 1e9

    def _read(self, block_ms: int | None) -> None:
        """Take whatever arrived on the chunk and cancel streams (one XREAD: same hash slot)."""
        response = self.client.xread(self._cursors, count=1000, block=block_ms)
        for key, entry_id, message in decode_entries(response):
            self._cursors[key] = entry_id
            if isinstance(message, Cancel):
                self._cancel = message
                continue
            decision = self.gate.receive(message)
            if (self.request.execute and isinstance(message, ChunkReady) and decision is not None
                    and decision.action is not GateAction.RUN):
                self._publish(GateDecision(message.seq, message.start_line, message.end_line, decision.action,
                                           decision.reason, self.gate.rules.preset.value, decision.line, now_ns()))

    def _run_batch(self, interpreter: Interpreter, batch: Batch) -> _Stop | None:
        chunks = batch.chunks
        self._last_batch = batch.number
        self._publish(BatchStarted(batch.number, chunks[0].seq, chunks[-1].seq, batch.first_line, batch.last_line, now_ns()))

        remaining_s = (self._deadline_ns - now_ns()) / 1e9
        timeout = min(self.settings.batch_timeout_s, max(remaining_s, 0.001))
        try:
            result = interpreter.run(batch.code, batch.first_line, self._on_output(batch.number), timeout=timeout,
                                     on_figure=self._on_figure(batch.number))
        except (BatchTimeout, LimitExceeded, InterpreterDied) as exc:
            self._execution_end_ns = now_ns()  # a killed batch ends at its kill: the session's latency includes it
            if isinstance(exc, BatchTimeout) and timeout < self.settings.batch_timeout_s:
                timeout_s = self.settings.session_timeout(self.request.timeout_s)
                return _Stop(SessionStatus.TIMEOUT, detail=f"session exceeded {timeout_s}"
                                                           f" s while batch {batch.number} ran")
            if isinstance(exc, BatchTimeout):
                return _Stop(SessionStatus.TIMEOUT, detail=f"batch {batch.number} ran longer than {timeout:.3f} s")
            status = SessionStatus.LIMIT_EXCEEDED if isinstance(exc, LimitExceeded) else SessionStatus.INTERPRETER_DIED
            return _Stop(status, detail=str(exc))
        self._publish(BatchFinished(batch.number, result.ok, result.started_ns, result.finished_ns))
        self._execution_end_ns = result.finished_ns
        self._busy_ns += result.finished_ns - result.started_ns
        if result.error is None:
            return None
        if result.error.compiling:  # as the detector's: python would have refused the whole program
            status = SessionStatus.SYNTAX_ERROR
        elif result.error.type == "SystemExit":
            status = SessionStatus.EXITED
        else:
            status = SessionStatus.ERROR
        return _Stop(status, _error_of(result.error))

    def _on_output(self, batch: int, results_end: bool = False) -> Callable[[str, str], None]:
        """Publishes the program's output as it comes; `results_end`: each is the last execution result so far
        (after the last batch, the interpreter's end prints results of its own)."""
        def on_output(stream: str, text: str) -> None:
            if stream == "stdout":
                self._stdout.append(text)
            self._publish(Output(batch, stream, text, now_ns()))
            if results_end:
                self._execution_end_ns = now_ns()

        return on_output

    def _on_figure(self, batch: int, results_end: bool = False) -> Callable[[bytes], None]:
        def on_figure(png: bytes) -> None:
            self._figures += 1
            self._publish(Figure(batch, self._figures, base64.b64encode(png).decode("ascii"), now_ns()))
            if results_end:
                self._execution_end_ns = now_ns()

        return on_figure

    def _end_program(self, interpreter: Interpreter, stop: _Stop) -> _Stop:
        """The interpreter's end, as python's after a script's last line (atexit handlers, threads joined,
        finalizers): its output is the session's too. A program that does not end in time has timed out."""
        assert self._last_batch is not None
        remaining_s = (self._deadline_ns - now_ns()) / 1e9
        try:
            interpreter.finish(self._on_output(self._last_batch, results_end=True),
                               timeout=max(0.001, min(self.settings.batch_timeout_s, remaining_s)),
                               on_figure=self._on_figure(self._last_batch, results_end=True))
        except BatchTimeout as exc:
            return _Stop(SessionStatus.TIMEOUT, stop.error, detail=str(exc))
        except InterpreterDied as exc:
            log.info("session %s: the interpreter died at its end: %s", self.request.session_id, exc)
        return stop

    def _stop_model(self, stop: _Stop) -> None:
        """Report the program's error and cancel generation if the model is still writing an answer that has
        failed, once each: the error first, since the user and a repair loop wait for it, not for the cancel."""
        if stop.error is not None and not self._error_published:
            self._error_published = True
            self._safely(lambda: self._publish(ExecutionError(**stop.error, at_ns=now_ns())))
        if stop.status is not SessionStatus.OK and self.gate.end is None and not self._cancel_sent:
            self._cancel_sent = True
            if self._cancel is None:
                self._safely(lambda: publish(
                    self.client, self.keys.cancel(self.request.session_id),
                    Cancel(stop.status.value, "executor", now_ns()),
                    self.settings.key_ttl_s,
                ))

    def _finish(self, stop: _Stop, kept: bool) -> Summary:
        """Report the error and stop the model if it is still writing, then the terminal summary."""
        self._stop_model(stop)
        if stop.status is not SessionStatus.OK and self.gate.end is None:
            self._safely(self._await_generation_end)
        end = self.gate.end
        generation = end.generation if end is not None else None
        summary = Summary(
            status=stop.status,
            gate=self.request.gate,
            submitted_ns=self.request.submitted_ns,
            finished_ns=now_ns(),
            stdout="".join(self._stdout),
            error=stop.error,
            first_token_ns=generation.first_token_ns if generation else None,
            generation_end_ns=generation.at_ns if generation else None,
            execution_end_ns=self._execution_end_ns,
            execution_busy_s=self._busy_ns / 1e9,
            chunks=self.gate.chunks_received,
            batches=self.gate.batches,
            finish_reason=generation.finish_reason.value if generation else None,
            tokens=generation.tokens if generation else None,
            detail=None if stop.detail is None else clip(stop.detail),
            started_ns=self._started_ns,
            turn=self.turn,
            interpreter_kept=kept,
        )
        ended = self._safely(lambda: end_session(self.client, self.keys, self.request.session_id, fitting(summary),
                                                 self.settings.key_ttl_s))
        if ended is not None and not ended.won:  # its lease lapsed and a client or the worker ended it first
            log.warning("session %s was already ended (%s: %s); its own %s summary is not published",
                        self.request.session_id, ended.summary.status.value, ended.summary.detail, summary.status.value)
        return summary

    def _await_generation_end(self) -> None:
        """After a cancel the model stops within milliseconds; wait briefly to report what it cost."""
        deadline = now_ns() + int(self.settings.cancel_wait_s * 1e9)
        while self.gate.end is None:
            remaining_ms = (deadline - now_ns()) // 1_000_000
            if remaining_ms <= 0:
                return
            self._read(block_ms=min(remaining_ms, MAX_BLOCK_MS))

    def _safely(self, action: Callable[[], _T]) -> _T | None:
        try:
            return action()
        except (redis.RedisError, ProtocolError, GateError):
            log.exception("session %s: could not publish", self.request.session_id)
            return None


def _error_dict(type_: str, message: str, line: int | None, traceback: str) -> dict:
    """An error as the ExecutionError and the Summary carry it: a long message and traceback (an exception
    raised with a 4 M character message) are cut with a marker, so both fit one message."""
    return {"type": type_, "message": clip(message), "line": line, "traceback": clip(traceback)}


def _error_of(error: CodeError) -> dict:
    return _error_dict(error.type, error.message, error.line, error.traceback)
