"""A session's life in the executor as a state machine: messages, the interpreter's outcomes and the time in;
actions out (publish this, cancel upstream, read, run this batch, end the program, end with this Summary).

Pure, as the gate is: nothing here touches Redis, runs code or reads a clock, so every way a session ends
(the program's error, a syntax error, a cancel, the deadline, a lost detector, a broken executor) is a unit
test. The shell (`session.SessionRunner`) performs each action and feeds back what came of it.

Phases, in order: STARTING (no interpreter yet), EXECUTING (batches run as the gate lets them; RUNNING while
one does), ENDING (the interpreter ends the program as python ends a script), RELEASING (the interpreter is
let go), DRAINING (after a cancel, generation's end is awaited briefly, to report what it cost), FINISHED.
The program's error is published the moment its batch returns, with the cancel beside it: neither waits for
the program's end nor for generation's end to come back through the producer and the detector.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eager.common.config import Settings
from eager.common import protocol as wire
from eager.common.protocol import SessionStatus
from eager.executor_pool._session_actions import Action, EndProgram, Read, ReleaseInterpreter, RunBatch
from eager.executor_pool._session_inputs import (
    BatchKilled,
    Failed,
    Input,
    InterpreterReady,
    InterpreterReleased,
    Kill,
    Printed,
    ProgramEnded,
    Showed,
)
from eager.executor_pool.gate import GateState
from eager.executor_pool.interpreter import BatchResult, CodeError
from eager.executor_pool.static_gate import Escape

MIN_TIMEOUT_S = 0.001  # what a batch gets when the deadline is all but spent: it times out, it is not skipped

# The program ran to its end, by itself: python would now end the interpreter, and show what that prints.
_PROGRAM_ENDS = frozenset({SessionStatus.OK, SessionStatus.ERROR, SessionStatus.EXITED})

_END_STATUS = {
    wire.CodeStatus.COMPLETE: SessionStatus.OK,
    wire.CodeStatus.NO_CODE: SessionStatus.NO_CODE,
    wire.CodeStatus.GENERATION_FAILED: SessionStatus.MODEL_ERROR,
    wire.CodeStatus.CANCELLED: SessionStatus.CANCELLED,
    wire.CodeStatus.REJECTED: SessionStatus.REJECTED,
}


class Phase(StrEnum):
    STARTING = "starting"
    EXECUTING = "executing"
    RUNNING = "running"  # a batch: awaits its BatchResult or BatchKilled
    ENDING = "ending"  # the program's end: awaits ProgramEnded
    RELEASING = "releasing"  # awaits InterpreterReleased
    DRAINING = "draining"
    FINISHED = "finished"


class MachineMisuse(RuntimeError):
    """The shell broke the machine's contract (an input the phase does not await): a bug, never a session's fate."""


@dataclass(frozen=True, slots=True)
class Limits:
    """This executor's own caps: a session's stamped deadline is clamped to `session_s`."""

    session_s: float
    batch_s: float
    cancel_wait_s: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.session_timeout_s, settings.batch_timeout_s, settings.cancel_wait_s)


@dataclass(frozen=True, slots=True)
class _Stop:
    status: SessionStatus
    error: dict[str, Any] | None = None
    detail: str | None = None


class SessionState:
    """One turn's session, from its interpreter's start to its Summary. `ends_program`: the interpreter ends
    with the turn (a conversation keeps it, and its program goes on in the next turn)."""

    def __init__(self, turn: wire.TurnRequest, gate: GateState, limits: Limits, started_ns: int, number: int = 1,
                 ends_program: bool = True) -> None:
        self.turn = turn
        self.gate = gate
        self.limits = limits
        self.number = number
        self.ends_program = ends_program
        self.deadline_ns = turn.deadline_within(limits.session_s)
        self.phase = Phase.STARTING
        self._started_ns = started_ns  # the job began: the end of the session's wait in the queue
        self._stop: _Stop | None = None
        self._cancel: wire.Cancel | None = None
        self._cancel_sent = False
        self._error_published = False
        self._take_arrivals = False  # a batch just ended: what arrived meanwhile joins the next batch
        self._batch: int | None = None  # the number of the batch that ran last
        self._batch_timeout_s = 0.0
        self._stdout: list[str] = []
        self._figures = 0
        self._execution_end_ns: int | None = None
        self._busy_ns = 0
        self._kept = False
        self._drain_until_ns = 0

    def remaining_s(self, now_ns: int) -> float:
        return (self.deadline_ns - now_ns) / 1e9

    @property
    def status(self) -> SessionStatus | None:
        """The session's status once it is decided."""
        return None if self._stop is None else self._stop.status

    def receive(self, event: Input, now_ns: int) -> list[Action]:
        """Take one input, observed at `now_ns`; the actions it calls for, to be performed in order."""
        if isinstance(event, InterpreterReady):
            return self._ready(event, now_ns)
        if isinstance(event, (Printed, Showed)):
            return [self._shown(event, now_ns)]
        if isinstance(event, BatchResult):
            return self._returned(event, now_ns)
        if isinstance(event, BatchKilled):
            return self._killed(event, now_ns)
        if isinstance(event, ProgramEnded):
            self._expect(Phase.ENDING, event)
            if event.timed_out is not None:
                assert self._stop is not None
                self._stop = _Stop(SessionStatus.TIMEOUT, self._stop.error, event.timed_out)
            return self._release()
        if isinstance(event, InterpreterReleased):
            self._expect(Phase.RELEASING, event)
            self._kept, self.phase = event.kept, Phase.DRAINING
            # a model cancelled mid-answer stops within milliseconds: wait briefly to report what it cost
            if self.status is not SessionStatus.OK and self.gate.end is None:
                self._drain_until_ns = now_ns + int(self.limits.cancel_wait_s * 1e9)
            return []
        if isinstance(event, Failed):
            return self._failed(event, now_ns)
        return self._arrived(event, now_ns)

    def next_actions(self, now_ns: int) -> list[Action]:
        """What to do next, the time being `now_ns`; asked whenever the actions before are done."""
        if self.phase is Phase.EXECUTING:
            return self._execute(now_ns)
        if self.phase is Phase.DRAINING:
            if self.gate.end is None and now_ns < self._drain_until_ns:
                return [Read(self._drain_until_ns)]
            self.phase = Phase.FINISHED
            return [self._summary(now_ns)]
        raise MachineMisuse(f"nothing to do while {self.phase.value}: it awaits an input")

    # -- executing -------------------------------------------------------------------------------------

    def _ready(self, event: InterpreterReady, now_ns: int) -> list[Action]:
        self._expect(Phase.STARTING, event)
        self.phase = Phase.EXECUTING
        if "netns" not in event.isolation:  # the network is reachable: using it would leave the sandbox
            self.gate = GateState(self.turn.gate, self.gate.rules.opening(Escape.NETWORK), self.gate.limits)
        return [wire.SessionStarted(event.worker, event.pid, self.turn.gate, now_ns, warm=event.warm,
                                    isolation=event.isolation, turn=self.number, kept_state=event.kept)]

    def _arrived(self, message: wire.Message, now_ns: int) -> list[Action]:
        """A message of the chunk stream, or a cancel."""
        if isinstance(message, wire.Cancel):
            self._cancel = message
            return []
        decision = self.gate.receive(message)
        if (not self.turn.execute or not isinstance(message, wire.ChunkReady) or decision is None
                or decision.action is wire.GateAction.RUN):
            return []
        return [wire.GateDecision(message.seq, message.start_line, message.end_line, decision.action,
                                  decision.reason, self.gate.rules.preset.value, decision.line, now_ns)]

    def _shown(self, event: Printed | Showed, now_ns: int) -> Action:
        if self.phase is Phase.ENDING:  # output of the program's end is a result too: the latency runs to it
            self._execution_end_ns = now_ns
        if isinstance(event, Showed):
            self._figures += 1
            return wire.Figure(self._batch or 0, self._figures, base64.b64encode(event.png).decode("ascii"), now_ns)
        if event.stream == "stdout":
            self._stdout.append(event.text)
        return wire.Output(self._batch or 0, event.stream, event.text, now_ns)

    def _execute(self, now_ns: int) -> list[Action]:
        if self._take_arrivals:
            self._take_arrivals = False
            return [Read(None)]
        batch = self.gate.next_batch(now_ns) if self.turn.execute else None
        if batch is not None:
            self.phase, self._batch = Phase.RUNNING, batch.number
            self._batch_timeout_s = min(self.limits.batch_s, max(self.remaining_s(now_ns), MIN_TIMEOUT_S))
            chunks = batch.chunks
            started = wire.BatchStarted(batch.number, chunks[0].seq, chunks[-1].seq, batch.first_line,
                                        batch.last_line, now_ns)
            return [started, RunBatch(batch, self._batch_timeout_s)]
        stop = self._verdict(now_ns)
        if stop is not None:
            return self._stopping(stop, now_ns)
        until_ns = self.deadline_ns
        wake_ns = self.gate.wake_at_ns()  # the batch policy's wait may run out before a message comes
        if wake_ns is not None:
            until_ns = min(until_ns, wake_ns)
        return [Read(until_ns, from_detector=True)]

    def _verdict(self, now_ns: int) -> _Stop | None:
        """Whether the session is over with nothing left to run, and how."""
        end, invalid = self.gate.end, self.gate.invalid
        if not self.turn.execute and end is not None:  # whatever code it wrote, none of it was to run
            status = _END_STATUS.get(end.status, SessionStatus.OK)
            return self._ended(SessionStatus.OK if status is SessionStatus.NO_CODE else status)
        if invalid is not None and self.turn.execute:
            return _Stop(SessionStatus.SYNTAX_ERROR, _error(invalid.error_type, invalid.message, invalid.line, ""))
        if end is not None:
            return self._ended(_END_STATUS[end.status])
        if self._cancel is not None:
            return _Stop(SessionStatus.CANCELLED, detail=self._cancelled_by())
        if now_ns >= self.deadline_ns:
            return _Stop(SessionStatus.TIMEOUT, detail=f"session exceeded {self._allowance_s} s")
        return None

    @property
    def _allowance_s(self) -> float:
        return self.turn.allowance_s(self.limits.session_s)

    def _ended(self, status: SessionStatus) -> _Stop:
        """Generation and detection are over: the status they make, and why, naming who cancelled if one did."""
        assert self.gate.end is not None
        if status is SessionStatus.CANCELLED and self._cancel is not None:
            return _Stop(status, detail=self._cancelled_by())
        return _Stop(status, detail=self.gate.end.generation.error)

    def _cancelled_by(self) -> str:
        assert self._cancel is not None
        return f"cancelled by {self._cancel.by}: {self._cancel.reason}"

    def _returned(self, result: BatchResult, now_ns: int) -> list[Action]:
        self._expect(Phase.RUNNING, result)
        assert self._batch is not None
        finished = wire.BatchFinished(self._batch, result.ok, result.started_ns, result.finished_ns)
        self._execution_end_ns = result.finished_ns
        self._busy_ns += result.finished_ns - result.started_ns
        self.phase, self._take_arrivals = Phase.EXECUTING, True
        if result.error is None:
            return [finished]
        if result.error.compiling:  # as the detector's: python would have refused the whole program
            status = SessionStatus.SYNTAX_ERROR
        elif result.error.type == "SystemExit":
            status = SessionStatus.EXITED
        else:
            status = SessionStatus.ERROR
        return [finished, *self._stopping(_Stop(status, _error_of(result.error)), now_ns)]

    def _killed(self, event: BatchKilled, now_ns: int) -> list[Action]:
        self._expect(Phase.RUNNING, event)
        self._execution_end_ns = now_ns  # a killed batch ends at its kill: the session's latency includes it
        if event.cause is Kill.TIMEOUT and self._batch_timeout_s < self.limits.batch_s:
            stop = _Stop(SessionStatus.TIMEOUT, detail=f"session exceeded {self._allowance_s} s while batch "
                                                       f"{self._batch} ran")
        elif event.cause is Kill.TIMEOUT:
            stop = _Stop(SessionStatus.TIMEOUT, detail=f"batch {self._batch} ran longer than "
                                                       f"{self._batch_timeout_s:.3f} s")
        else:
            status = SessionStatus.LIMIT_EXCEEDED if event.cause is Kill.LIMIT else SessionStatus.INTERPRETER_DIED
            stop = _Stop(status, detail=event.detail)
        return self._stopping(stop, now_ns)

    # -- stopping --------------------------------------------------------------------------------------

    def _stopping(self, stop: _Stop, now_ns: int) -> list[Action]:
        """The session's status is known: report its error at once and stop the model if it is still writing
        an answer that has failed (the error first: the user and a repair loop wait for it, not for the
        cancel), then end the program or let the interpreter go."""
        self._stop = stop
        actions: list[Action] = []
        if stop.error is not None and not self._error_published:
            self._error_published = True
            actions.append(wire.ExecutionError(**stop.error, at_ns=now_ns))
        if (stop.status is not SessionStatus.OK and self.gate.end is None and self._cancel is None
                and not self._cancel_sent):
            self._cancel_sent = True
            actions.append(wire.Cancel(stop.status.value, "executor", now_ns))
        if stop.status in _PROGRAM_ENDS and self._batch is not None and self.ends_program:
            self.phase = Phase.ENDING
            timeout_s = max(MIN_TIMEOUT_S, min(self.limits.batch_s, self.remaining_s(now_ns)))
            return [*actions, EndProgram(timeout_s)]
        return [*actions, *self._release()]

    def _release(self) -> list[Action]:
        self.phase = Phase.RELEASING
        return [ReleaseInterpreter()]

    def _failed(self, event: Failed, now_ns: int) -> list[Action]:
        """The session cannot go on, and what the shell still had to do is dropped: this plans anew. Before
        the status is known the session fails; after, the program's own status stands (its error is already
        out), the interpreter is still let go, and whatever else the session waited for is given up."""
        if self.phase in (Phase.STARTING, Phase.EXECUTING, Phase.RUNNING):
            return self._stopping(_Stop(SessionStatus.FAILED, detail=event.detail), now_ns)
        if self.phase in (Phase.ENDING, Phase.RELEASING):
            return self._release()
        self._drain_until_ns = 0
        return []

    def _summary(self, now_ns: int) -> wire.Summary:
        assert self._stop is not None
        stop, end = self._stop, self.gate.end
        generation = end.generation if end is not None else None
        return wire.fitting(wire.Summary(
            status=stop.status,
            gate=self.turn.gate,
            submitted_ns=self.turn.submitted_ns,
            finished_ns=now_ns,
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
            detail=None if stop.detail is None else wire.clip(stop.detail),
            started_ns=self._started_ns,
            turn=self.number,
            interpreter_kept=self._kept,
        ))

    def _expect(self, phase: Phase, event: Input) -> None:
        if self.phase is not phase:
            raise MachineMisuse(f"{type(event).__name__} while {self.phase.value}, not {phase.value}")


def _error(type_: str, message: str, line: int | None, traceback: str) -> dict[str, Any]:
    """An error as the ExecutionError and the Summary carry it: a long message and traceback (an exception
    raised with a 4 M character message) are cut with a marker, so both fit one message."""
    return {"type": type_, "message": wire.clip(message), "line": line, "traceback": wire.clip(traceback)}


def _error_of(error: CodeError) -> dict[str, Any]:
    return _error(error.type, error.message, error.line, error.traceback)
