"""One session's execution: the RQ job that feeds its chunks through the gate into one interpreter.

The job is enqueued when the session is submitted, so the work-horse fork and the
interpreter start are paid while the model is still on its first token. Errors of the
generated code are results (a terminal Summary), never a failed job; the job fails only
if the executor itself breaks, and even then it publishes a terminal Summary first.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import redis

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS, connect
from eager.common.heartbeat import process_name
from eager.common.lease import UPSTREAM_GRACE_LEASES, Watch, held, lapsed
from eager.common.protocol import (Cancel, Keys, Message, ProtocolError, SessionSpec, SessionStatus, Summary,
                                   TurnRequest, decode)
from eager.common.streams import decode_entries, end_session, publish
from eager.executor_pool import _session_inputs as told
from eager.executor_pool._session_actions import Action, EndProgram, Read, ReleaseInterpreter, RunBatch
from eager.executor_pool._session_state import Limits, SessionState
from eager.executor_pool.conversation import Interpreters, SetupFailed, TurnWait
from eager.executor_pool.gate import BatchLimits, GateError, GateState
from eager.executor_pool.interpreter import BatchTimeout, Interpreter, InterpreterDied, InterpreterError, LimitExceeded
from eager.executor_pool.static_gate import Rules

log = logging.getLogger(__name__)

# What the executor itself may fail with mid-session: the session ends `failed`, never the job.
_FAILURES = (redis.RedisError, ProtocolError, GateError, OSError, InterpreterError)
# A job's time past its sessions' deadlines: the program's end, the wait for generation's end after a cancel.
JOB_MARGIN_S = 60


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


def job_timeout_s(spec: SessionSpec, settings: Settings, now: int) -> int:
    """How long RQ lets the job's horse run before killing it: a backstop behind the sessions' own deadlines,
    sized here from what the spec carries and this executor's own caps, so no client stretches it."""
    first_s = max(0.0, (spec.first.deadline_within(settings.session_timeout_s) - now) / 1e9)
    later_s = (spec.max_turns - 1) * (settings.turn_idle_s + settings.session_timeout_s)
    return int(first_s + later_s + JOB_MARGIN_S)


def run_session(*args: Any, **kwargs: Any) -> str:
    """The RQ job function: runs the session its spec names and returns the (last turn's) terminal status. With a
    conversation, the job then runs that conversation's later turns, up to `max_turns`, in the same interpreter."""
    spec = spec_of(args, kwargs)
    settings = Settings.from_env()
    client, keys = connect(settings), Keys(settings.namespace)
    interpreters = Interpreters(settings, setup=spec.setup)
    turn, conversation = spec.first, spec.conversation
    turns = None if conversation is None else TurnWait(client, keys, settings, conversation, turn.submitted_ns)
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
class SessionRunner:
    """The session's shell: performs what its state machine (`_session_state.SessionState`) asks, on Redis and
    the interpreter, and feeds back what came of it. Every decision is the machine's."""

    client: redis.Redis
    keys: Keys
    settings: Settings
    interpreters: Interpreters
    request: TurnRequest  # the session, its gate and its own limits (batching, deadline), if it chose any
    turn: int = 1  # its place in its conversation
    machine: SessionState = field(init=False)
    _interpreter: Interpreter | None = None
    _cursors: dict[str, str] = field(init=False)
    _detector: Watch = field(init=False)
    _status: SessionStatus | None = None

    def __post_init__(self) -> None:
        started_ns = now_ns()
        chunks, wait_ms = self.request.batch_chunks, self.request.batch_wait_ms
        limits = BatchLimits(chunks or self.settings.gate_batch_chunks,
                             self.settings.gate_batch_wait_ms if wait_ms is None else wait_ms)
        rules = Rules.parse(self.settings.gate_preset, self.settings.gate_escapes, self.settings.gate_hold)
        self.machine = SessionState(self.request, GateState(self.request.gate, rules, limits), Limits.of(self.settings),
                                    started_ns, self.turn, ends_program=not self.interpreters.keep)
        session_id = self.request.session_id
        self._cursors = {self.keys.chunks(session_id): "0-0", self.keys.cancel(session_id): "0-0"}
        # counted from the job's start, not the request's: a session that waited in the queue finds its detector
        # long done (and its lease released), with all its chunks already in the stream for the first read
        self._detector = Watch.upstream(started_ns, self.settings.lease_s, taken_over=True)

    def run(self) -> SessionStatus:
        try:
            interpreter, warm, kept = self.interpreters.acquire(self.turn, self.machine.remaining_s(now_ns()))
        except _FAILURES as exc:
            self._feed(told.Failed(self._failure(exc)))
        else:
            self._interpreter, pid = interpreter, interpreter.pid
            assert pid is not None  # acquired: started
            self._feed(told.InterpreterReady(socket.gethostname(), pid, interpreter.isolation, warm, kept))
        while self._status is None:
            self._perform_all(self.machine.next_actions(now_ns()))
        return self._status

    def _feed(self, event: told.Input) -> None:
        self._perform_all(self.machine.receive(event, now_ns()))

    def _perform_all(self, actions: list[Action]) -> None:
        """Perform the actions in order; a failure is fed to the machine, and the rest of the plan, made before
        it, is dropped (the machine has planned anew)."""
        for action in actions:
            try:
                self._perform(action)
            except _FAILURES as exc:
                self._feed(told.Failed(self._failure(exc)))
                return

    def _failure(self, exc: Exception) -> str:
        if isinstance(exc, redis.RedisError):
            log.exception("session %s lost Redis", self.request.session_id)
            return (f"lost Redis mid-session ({type(exc).__name__}: {exc}); "
                    "what the session had published may be gone")
        if isinstance(exc, SetupFailed):
            return str(exc)
        log.exception("session %s failed in the executor", self.request.session_id)
        return f"executor failure: {exc!r}"

    def _perform(self, action: Action) -> None:
        session_id, ttl_s = self.request.session_id, self.settings.key_ttl_s
        if isinstance(action, Summary):
            self._end(action)
        elif isinstance(action, Cancel):
            publish(self.client, self.keys.cancel(session_id), action, ttl_s)
        elif isinstance(action, Message):
            publish(self.client, self.keys.events(session_id), action, ttl_s)
        elif isinstance(action, Read):
            self._read(action)
        elif isinstance(action, RunBatch):
            self._run_batch(action)
        elif isinstance(action, EndProgram):
            self._end_program(action)
        else:
            assert isinstance(action, ReleaseInterpreter)
            try:
                self.interpreters.release()
            finally:
                self._feed(told.InterpreterReleased(self.interpreters.holds_living()))

    def _read(self, action: Read) -> None:
        """Take whatever arrived on the chunk and cancel streams (one XREAD: same hash slot)."""
        session_id = self.request.session_id
        if action.from_detector and lapsed(self.client, self.keys.lease(session_id, "detector"), self._detector,
                                           now_ns()):
            self._feed(told.Failed(f"no detector held the session for {UPSTREAM_GRACE_LEASES * self.settings.lease_s}"
                                   " s (request lost, or no detector running)"))
            return
        block_ms = None
        if action.until_ns is not None:
            block_ms = max(1, min(MAX_BLOCK_MS, -(-(action.until_ns - now_ns()) // 1_000_000)))
        response = self.client.xread(self._cursors, count=1000, block=block_ms)
        for key, entry_id, message in decode_entries(response):
            self._cursors[key] = entry_id
            self._feed(message)

    def _run_batch(self, action: RunBatch) -> None:
        assert self._interpreter is not None
        batch = action.batch
        try:
            result = self._interpreter.run(batch.code, batch.first_line, self._on_output, timeout=action.timeout_s,
                                           on_figure=self._on_figure)
        except BatchTimeout as exc:
            self._feed(told.BatchKilled(told.Kill.TIMEOUT, str(exc)))
        except LimitExceeded as exc:
            self._feed(told.BatchKilled(told.Kill.LIMIT, str(exc)))
        except InterpreterDied as exc:
            self._feed(told.BatchKilled(told.Kill.DIED, str(exc)))
        else:
            self._feed(result)

    def _on_output(self, stream: str, text: str) -> None:
        self._streamed(told.Printed(stream, text))

    def _on_figure(self, png: bytes) -> None:
        self._streamed(told.Showed(png))

    def _streamed(self, event: told.Printed | told.Showed) -> None:
        """Published while the interpreter runs: a failure stops the batch (it propagates out of the run)."""
        for action in self.machine.receive(event, now_ns()):
            self._perform(action)

    def _end_program(self, action: EndProgram) -> None:
        """The interpreter's end, as python's after a script's last line (atexit handlers, threads joined,
        finalizers): its output is the session's too."""
        assert self._interpreter is not None
        try:
            self._interpreter.finish(self._on_output, timeout=action.timeout_s, on_figure=self._on_figure)
        except BatchTimeout as exc:
            self._feed(told.ProgramEnded(timed_out=str(exc)))
            return
        except InterpreterDied as exc:
            log.info("session %s: the interpreter died at its end: %s", self.request.session_id, exc)
        self._feed(told.ProgramEnded())

    def _end(self, summary: Summary) -> None:
        """The terminal Summary, through the one end every ender goes through."""
        self._status = summary.status
        ended = end_session(self.client, self.keys, self.request.session_id, summary, self.settings.key_ttl_s)
        if not ended.won:  # its lease lapsed and a client or the worker ended it first
            log.warning("session %s was already ended (%s: %s); its own %s summary is not published",
                        self.request.session_id, ended.summary.status.value, ended.summary.detail, summary.status.value)
