"""The executor's session as a state machine, as plain data: inputs and the time in, actions out.

Every way a session ends is driven here without Redis or an interpreter: the shell (SessionRunner) only
performs these actions, so what they are, and in which order, is the session's behaviour.
"""

from __future__ import annotations

import base64

import pytest

from eager.common import protocol as wire
from eager.common.protocol import CodeStatus, FinishReason, Gate, SessionStatus
from eager.executor_pool._session_actions import EndProgram, Read, ReleaseInterpreter, RunBatch
from eager.executor_pool._session_inputs import (BatchKilled, Failed, InterpreterReady, InterpreterReleased, Kill,
                                                 Printed, ProgramEnded, Showed)
from eager.executor_pool._session_state import Limits, MachineMisuse, Phase, SessionState
from eager.executor_pool.gate import BatchLimits, GateState
from eager.executor_pool.interpreter import BatchResult, CodeError

S = 1_000_000_000
MS = 1_000_000
T0 = 1_000 * S  # the session's submission
CAPS = Limits(session_s=300.0, batch_s=60.0, cancel_wait_s=2.0)
SANDBOXED = "uid+netns+mounts"


def turn(gate: Gate = Gate.EAGER, deadline_s: float | None = None, execute: bool = True) -> wire.TurnRequest:
    deadline_ns = None if deadline_s is None else T0 + int(deadline_s * S)
    return wire.TurnRequest("s1", gate, T0, execute=execute, deadline_ns=deadline_ns)


def machine(request: wire.TurnRequest | None = None, limits: Limits = CAPS, ends_program: bool = True,
            batch: BatchLimits | None = None, isolation: str = SANDBOXED) -> SessionState:
    """A session whose interpreter is ready, its wire.SessionStarted already taken out."""
    request = request or turn()
    state = SessionState(request, GateState(request.gate, limits=batch), limits, started_ns=T0 + 5 * MS, number=1,
                         ends_program=ends_program)
    state.receive(InterpreterReady("host", 42, isolation, warm=True, kept=False), T0 + 6 * MS)
    return state


def chunk(seq: int, code: str | None = None, at_ns: int = T0) -> wire.ChunkReady:
    code = code if code is not None else f"x{seq} = {seq}\n"
    return wire.ChunkReady(seq, seq + 1, seq + code.count("\n"), code, 0, at_ns, at_ns)


def detection_end(status: CodeStatus = CodeStatus.COMPLETE, chunks: int = 1, error: str | None = None,
                  reason: FinishReason = FinishReason.STOP) -> wire.DetectionEnd:
    generation = wire.GenerationEnd(reason, T0 + 3 * S, 30, first_token_ns=T0 + S // 10, error=error)
    return wire.DetectionEnd(status, chunks, generation, T0 + 3 * S)


def arrive(state: SessionState, *messages: wire.Message, at_ns: int = T0 + S) -> list:
    return [action for message in messages for action in state.receive(message, at_ns)]


def ran(started_ns: int = T0 + S, finished_ns: int = T0 + 2 * S, error: CodeError | None = None) -> BatchResult:
    return BatchResult(error is None, error, started_ns, finished_ns)


def published(actions: list) -> list:
    """What goes on the session's events stream (not the cancel, not the end)."""
    return [action for action in actions if isinstance(action, wire.Message)
            and not isinstance(action, (wire.Cancel, wire.Summary))]


def run_first_batch(state: SessionState, now_ns: int = T0 + S) -> RunBatch:
    started, run = state.next_actions(now_ns)
    assert isinstance(started, wire.BatchStarted) and isinstance(run, RunBatch)
    return run


def finish(state: SessionState, now_ns: int) -> wire.Summary:
    """The session's end, once nothing more is awaited."""
    (summary,) = state.next_actions(now_ns)
    assert isinstance(summary, wire.Summary), summary
    return summary


def released(state: SessionState, at_ns: int, kept: bool = False) -> None:
    assert state.receive(InterpreterReleased(kept), at_ns) == []


ZERO_DIVISION = CodeError("ZeroDivisionError", "division by zero", 3, "Traceback ...\nZeroDivisionError")


# -- starting -----------------------------------------------------------------------------------------


def test_the_ready_interpreter_is_announced_with_the_turn_and_how_it_is_isolated() -> None:
    request = turn()
    state = SessionState(request, GateState(Gate.EAGER), CAPS, started_ns=T0, number=3)
    (action,) = state.receive(InterpreterReady("host", 42, SANDBOXED, warm=True, kept=True), T0 + MS)
    assert action == wire.SessionStarted("host", 42, Gate.EAGER, T0 + MS, warm=True, isolation=SANDBOXED, turn=3,
                                            kept_state=True)
    assert state.phase is Phase.EXECUTING


def test_without_a_network_namespace_network_calls_are_held() -> None:
    code = "import socket\nsocket.create_connection(('example.com', 80))\n"
    isolated, open_ = machine(isolation=SANDBOXED), machine(isolation="uid+mounts")
    assert published(arrive(isolated, chunk(0, code))) == []
    (decision,) = published(arrive(open_, chunk(0, code)))
    assert isinstance(decision, wire.GateDecision) and decision.action is wire.GateAction.HOLD and decision.at_ns == T0 + S


def test_asked_for_an_action_before_its_interpreter_is_ready_the_machine_refuses() -> None:
    state = SessionState(turn(), GateState(Gate.EAGER), CAPS, started_ns=T0)
    with pytest.raises(MachineMisuse):
        state.next_actions(T0)


# -- executing ----------------------------------------------------------------------------------------


def test_a_chunk_runs_at_once_with_the_batch_cap_as_its_timeout() -> None:
    state = machine()
    arrive(state, chunk(0))
    started, run = state.next_actions(T0 + S)
    assert started == wire.BatchStarted(0, 0, 0, 1, 1, T0 + S)
    assert run == RunBatch(run.batch, 60.0) and run.batch.code == "x0 = 0\n"
    assert state.phase is Phase.RUNNING


def test_chunks_that_arrive_while_a_batch_runs_run_together_next() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    arrive(state, chunk(1), chunk(2))
    assert published(state.receive(ran(), T0 + 2 * S)) == [wire.BatchFinished(0, True, T0 + S, T0 + 2 * S)]
    assert state.next_actions(T0 + 2 * S) == [Read(None)]  # first what else arrived meanwhile, without waiting
    arrive(state, chunk(3))
    _, run = state.next_actions(T0 + 2 * S)
    assert [c.seq for c in run.batch.chunks] == [1, 2, 3]


def test_with_nothing_to_run_it_waits_for_the_detector_until_the_deadline() -> None:
    state = machine(turn(deadline_s=10.0))
    assert state.next_actions(T0 + S) == [Read(T0 + 10 * S, from_detector=True)]


def test_the_batch_policy_s_wait_bounds_the_read() -> None:
    state = machine(turn(Gate.BATCH), batch=BatchLimits(chunks=4, wait_ms=200))
    arrive(state, chunk(0, at_ns=T0 + S))
    assert state.next_actions(T0 + S) == [Read(T0 + S + 200 * MS, from_detector=True)]
    assert isinstance(state.next_actions(T0 + S + 200 * MS)[1], RunBatch)


def test_serial_runs_nothing_until_the_end_then_the_whole_program_at_once() -> None:
    state = machine(turn(Gate.SERIAL))
    arrive(state, chunk(0), chunk(1))
    assert state.next_actions(T0 + S) == [Read(T0 + 300 * S, from_detector=True)]
    arrive(state, detection_end(chunks=2))
    assert [c.seq for c in run_first_batch(state, T0 + 3 * S).batch.chunks] == [0, 1]


def test_a_held_chunk_is_reported_with_its_reason_and_line() -> None:
    state = machine()
    (decision,) = published(arrive(state, chunk(0, "import signal\nsignal.alarm(1)\n")))
    assert decision.action is wire.GateAction.HOLD and decision.line == 2 and "signal.alarm" in decision.reason
    assert state.next_actions(T0 + S) == [Read(T0 + 300 * S, from_detector=True)]


def test_output_is_published_as_it_comes_and_kept_for_the_summary() -> None:
    state = machine()
    arrive(state, chunk(0, "print('hi')\n"))
    run_first_batch(state)
    assert state.receive(Printed("stdout", "hi\n"), T0 + S + 10) == [wire.Output(0, "stdout", "hi\n", T0 + S + 10)]
    assert published(state.receive(Printed("stderr", "warn\n"), T0 + S + 20)) == [wire.Output(0, "stderr", "warn\n",
                                                                                          T0 + S + 20)]
    (figure,) = published(state.receive(Showed(b"\x89PNG"), T0 + S + 30))
    assert figure == wire.Figure(0, 1, base64.b64encode(b"\x89PNG").decode(), T0 + S + 30)
    state.receive(ran(), T0 + 2 * S)
    arrive(state, detection_end())
    assert state.next_actions(T0 + 2 * S) == [Read(None)]
    assert state.next_actions(T0 + 2 * S) == [EndProgram(60.0)]
    state.receive(Printed("stdout", "bye\n"), T0 + 4 * S)  # an atexit handler's: a result too
    assert state.receive(ProgramEnded(), T0 + 4 * S) == [ReleaseInterpreter()]
    released(state, T0 + 4 * S)
    summary = finish(state, T0 + 5 * S)
    assert summary.status is SessionStatus.OK and summary.stdout == "hi\nbye\n"
    assert summary.execution_end_ns == T0 + 4 * S and summary.execution_busy_s == 1.0


# -- the program's error ------------------------------------------------------------------------------


def test_the_error_is_published_the_moment_its_batch_returns_with_the_cancel_beside_it() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    actions = state.receive(ran(error=ZERO_DIVISION), T0 + 2 * S + 7)
    finished, error, cancel, end = actions
    assert finished == wire.BatchFinished(0, False, T0 + S, T0 + 2 * S)
    assert error == wire.ExecutionError("ZeroDivisionError", "division by zero", 3, ZERO_DIVISION.traceback,
                                        T0 + 2 * S + 7)
    assert cancel == wire.Cancel("error", "executor", T0 + 2 * S + 7)
    assert end == EndProgram(60.0)  # the program's end comes after: python shows its error then ends


def failed_mid_generation(at_ns: int = T0 + 2 * S) -> SessionState:
    """A session whose first batch raised while the model still wrote, its program ended and its
    interpreter let go."""
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    state.receive(ran(error=ZERO_DIVISION), at_ns)
    state.receive(ProgramEnded(), at_ns)
    released(state, at_ns)
    return state


def test_after_the_error_the_end_of_generation_is_awaited_only_briefly() -> None:
    state = failed_mid_generation()
    assert state.next_actions(T0 + 2 * S) == [Read(T0 + 4 * S)]  # the cancel wait, not the detector's lease
    summary = finish(state, T0 + 4 * S)
    assert summary.status is SessionStatus.ERROR and summary.error["type"] == "ZeroDivisionError"
    assert summary.generation_end_ns is None and summary.finished_ns == T0 + 4 * S


def test_the_end_of_generation_after_the_cancel_ends_the_wait_and_is_reported() -> None:
    state = failed_mid_generation()
    arrive(state, detection_end(CodeStatus.CANCELLED, reason=FinishReason.CANCELLED))
    summary = finish(state, T0 + 2 * S + 5 * MS)
    assert summary.status is SessionStatus.ERROR and summary.finish_reason == "cancelled"
    assert (summary.tokens, summary.chunks, summary.batches, summary.started_ns) == (30, 1, 1, T0 + 5 * MS)


def test_an_error_after_generation_ended_cancels_nothing() -> None:
    state = machine()
    arrive(state, chunk(0), detection_end())
    run_first_batch(state)
    actions = state.receive(ran(error=ZERO_DIVISION), T0 + 2 * S)
    assert not any(isinstance(action, wire.Cancel) for action in actions)
    state.receive(ProgramEnded(), T0 + 2 * S)
    released(state, T0 + 2 * S)
    assert finish(state, T0 + 2 * S).status is SessionStatus.ERROR  # no wait: nothing to wait for


@pytest.mark.parametrize(("error", "status"), [
    (CodeError("SystemExit", "3", 2, ""), SessionStatus.EXITED),
    (CodeError("SyntaxError", "bad", 2, "", compiling=True), SessionStatus.SYNTAX_ERROR),
])
def test_an_exit_and_a_compile_error_are_their_own_statuses(error: CodeError, status: SessionStatus) -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    actions = state.receive(ran(error=error), T0 + 2 * S)
    assert published(actions)[1] == wire.ExecutionError(error.type, error.message, 2, "", T0 + 2 * S)
    ends_program = isinstance(actions[-1], EndProgram)
    assert ends_program is (status is SessionStatus.EXITED)  # python runs nothing of a program it cannot compile
    if ends_program:
        state.receive(ProgramEnded(), T0 + 2 * S)
    released(state, T0 + 2 * S)
    assert finish(state, T0 + 5 * S).status is status


def test_a_conversation_keeps_its_interpreter_so_the_program_does_not_end() -> None:
    state = machine(ends_program=False)
    arrive(state, chunk(0))
    run_first_batch(state)
    assert state.receive(ran(error=ZERO_DIVISION), T0 + 2 * S)[-1] == ReleaseInterpreter()
    released(state, T0 + 2 * S, kept=True)
    state.receive(detection_end(CodeStatus.CANCELLED), T0 + 2 * S)
    assert finish(state, T0 + 2 * S).interpreter_kept


def test_a_long_error_is_cut_to_fit_one_message() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    huge = CodeError("ValueError", "x" * 4_000_000, 1, "")
    error = published(state.receive(ran(error=huge), T0 + 2 * S))[1]
    assert len(error.message) < 30_000 and "characters cut" in error.message


def test_a_syntax_error_the_detector_proves_stops_the_session_at_its_line() -> None:
    state = machine()
    arrive(state, chunk(0), wire.CodeInvalid(4, "invalid syntax", T0 + S))
    error, cancel, release = state.next_actions(T0 + S)
    assert error == wire.ExecutionError("SyntaxError", "invalid syntax", 4, "", T0 + S)
    assert isinstance(cancel, wire.Cancel) and release == ReleaseInterpreter()


# -- ends without the program's error -----------------------------------------------------------------


def test_a_complete_program_ends_ok_once_everything_ran() -> None:
    state = machine()
    arrive(state, chunk(0), detection_end())
    run_first_batch(state)
    state.receive(ran(), T0 + 2 * S)
    assert state.next_actions(T0 + 2 * S) == [Read(None)]
    assert state.next_actions(T0 + 2 * S) == [EndProgram(60.0)]
    state.receive(ProgramEnded(), T0 + 2 * S)
    released(state, T0 + 2 * S)
    summary = finish(state, T0 + 2 * S)
    assert summary.status is SessionStatus.OK and summary.error is None and summary.generation_end_ns == T0 + 3 * S


def test_a_program_that_does_not_end_in_time_times_out_keeping_its_error() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    state.receive(ran(error=ZERO_DIVISION), T0 + 2 * S)
    state.receive(ProgramEnded(timed_out="a thread would not stop"), T0 + 3 * S)
    released(state, T0 + 3 * S)
    summary = finish(state, T0 + 5 * S)
    assert summary.status is SessionStatus.TIMEOUT and summary.detail == "a thread would not stop"
    assert summary.error["type"] == "ZeroDivisionError"


@pytest.mark.parametrize(("end", "status", "detail"), [
    (detection_end(CodeStatus.NO_CODE, 0), SessionStatus.NO_CODE, None),
    (detection_end(CodeStatus.GENERATION_FAILED, 0, error="HTTP 500"), SessionStatus.MODEL_ERROR, "HTTP 500"),
    (detection_end(CodeStatus.REJECTED, 0, error="malformed"), SessionStatus.REJECTED, "malformed"),
])
def test_how_generation_ended_makes_the_status(end: wire.DetectionEnd, status: SessionStatus, detail: str | None) -> None:
    state = machine()
    arrive(state, end)
    assert state.next_actions(T0 + S) == [ReleaseInterpreter()]  # nothing ran: no program to end, no cancel
    released(state, T0 + S)
    summary = finish(state, T0 + S)
    assert (summary.status, summary.detail) == (status, detail)


def test_a_client_s_cancel_ends_the_session_naming_it_and_is_not_sent_back() -> None:
    state = machine()
    arrive(state, wire.Cancel("user pressed stop", "client", T0 + S))
    assert state.next_actions(T0 + S) == [ReleaseInterpreter()]
    released(state, T0 + S)
    arrive(state, detection_end(CodeStatus.CANCELLED, 0, reason=FinishReason.CANCELLED))
    summary = finish(state, T0 + S)
    assert summary.status is SessionStatus.CANCELLED and summary.detail == "cancelled by client: user pressed stop"


def test_a_turn_that_only_talks_runs_nothing_and_ends_ok() -> None:
    state = machine(turn(execute=False))
    assert published(arrive(state, chunk(0, "import signal\nsignal.alarm(1)\n"))) == []
    arrive(state, detection_end(CodeStatus.NO_CODE, 0))
    assert state.next_actions(T0 + S) == [ReleaseInterpreter()]
    released(state, T0 + S)
    assert finish(state, T0 + S).status is SessionStatus.OK


@pytest.mark.parametrize(("cause", "status"), [(Kill.LIMIT, SessionStatus.LIMIT_EXCEEDED),
                                               (Kill.DIED, SessionStatus.INTERPRETER_DIED)])
def test_a_killed_interpreter_ends_the_session_at_its_kill(cause: Kill, status: SessionStatus) -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    cancel, release = state.receive(BatchKilled(cause, "killed by SIGKILL"), T0 + 2 * S)
    assert isinstance(cancel, wire.Cancel) and cancel.reason == status.value
    assert release == ReleaseInterpreter()
    released(state, T0 + 2 * S)
    summary = finish(state, T0 + 9 * S)
    assert (summary.status, summary.detail, summary.execution_end_ns) == (status, "killed by SIGKILL", T0 + 2 * S)


def test_a_batch_longer_than_the_batch_cap_times_out_naming_the_cap() -> None:
    state = machine(limits=Limits(300.0, 5.0, 2.0))
    arrive(state, chunk(0))
    assert run_first_batch(state).timeout_s == 5.0
    state.receive(BatchKilled(Kill.TIMEOUT, "timed out"), T0 + 6 * S)
    released(state, T0 + 6 * S)
    summary = finish(state, T0 + 9 * S)
    assert summary.status is SessionStatus.TIMEOUT and summary.detail == "batch 0 ran longer than 5.000 s"


def test_a_lost_detector_fails_the_session_and_stops_the_model() -> None:
    state = machine()
    cancel, release = state.receive(Failed("no detector held the session for 9 s"), T0 + 9 * S)
    assert cancel == wire.Cancel("failed", "executor", T0 + 9 * S) and release == ReleaseInterpreter()
    released(state, T0 + 9 * S)
    assert state.next_actions(T0 + 9 * S) == [Read(T0 + 11 * S)]
    summary = finish(state, T0 + 11 * S)
    assert summary.status is SessionStatus.FAILED and summary.detail == "no detector held the session for 9 s"


# -- the deadline: stamped once, clamped to this executor's cap ---------------------------------------


def test_a_stamped_deadline_shorter_than_the_cap_is_honoured() -> None:
    state = machine(turn(deadline_s=1.5))
    assert state.next_actions(T0 + S) == [Read(T0 + 3 * S // 2, from_detector=True)]
    cancel, release = state.next_actions(T0 + 3 * S // 2)
    assert isinstance(cancel, wire.Cancel) and release == ReleaseInterpreter()
    released(state, T0 + 3 * S // 2)
    state.receive(detection_end(CodeStatus.CANCELLED), T0 + 2 * S)
    summary = finish(state, T0 + 2 * S)
    assert summary.status is SessionStatus.TIMEOUT and summary.detail == "session exceeded 1.5 s"


def test_a_stamped_deadline_longer_than_the_cap_is_clamped_to_it() -> None:
    state = machine(turn(deadline_s=1000.0), limits=Limits(4.0, 60.0, 2.0))
    assert state.deadline_ns == T0 + 4 * S
    assert state.next_actions(T0 + S) == [Read(T0 + 4 * S, from_detector=True)]
    state.next_actions(T0 + 4 * S)
    released(state, T0 + 4 * S)
    assert finish(state, T0 + 6 * S).detail == "session exceeded 4.0 s"


def test_a_turn_from_an_older_client_without_a_stamp_keeps_its_own_timeout() -> None:
    state = machine(wire.TurnRequest("s1", Gate.EAGER, T0, timeout_s=2.0))
    assert state.deadline_ns == T0 + 2 * S


def test_a_batch_gets_only_what_is_left_of_the_deadline_and_its_kill_is_the_session_s_timeout() -> None:
    state = machine(turn(deadline_s=10.0))
    arrive(state, chunk(0))
    assert run_first_batch(state, T0 + 8 * S).timeout_s == 2.0
    state.receive(BatchKilled(Kill.TIMEOUT, "timed out"), T0 + 10 * S)
    released(state, T0 + 10 * S)
    summary = finish(state, T0 + 12 * S)
    assert summary.status is SessionStatus.TIMEOUT and summary.detail == "session exceeded 10.0 s while batch 0 ran"


def test_a_batch_past_the_deadline_still_gets_a_moment_and_then_times_out() -> None:
    state = machine(turn(deadline_s=1.0))
    arrive(state, chunk(0))
    assert run_first_batch(state, T0 + 2 * S).timeout_s == 0.001


# -- the executor's own failures ----------------------------------------------------------------------


def test_a_failure_before_the_interpreter_is_ready_fails_the_session_and_stops_the_model() -> None:
    state = SessionState(turn(), GateState(Gate.EAGER), CAPS, started_ns=T0)
    cancel, release = state.receive(Failed("the conversation's setup code raised NameError"), T0 + S)
    assert isinstance(cancel, wire.Cancel) and release == ReleaseInterpreter()
    released(state, T0 + S)
    arrive(state, detection_end(CodeStatus.CANCELLED))
    summary = finish(state, T0 + S)
    assert summary.status is SessionStatus.FAILED and "setup code" in summary.detail


def test_a_failure_mid_batch_fails_the_session() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    cancel, release = state.receive(Failed("lost Redis mid-session"), T0 + 2 * S)
    assert isinstance(cancel, wire.Cancel) and release == ReleaseInterpreter()


def test_a_failure_once_the_status_is_known_keeps_it_and_gives_up_waiting() -> None:
    state = machine()
    arrive(state, chunk(0))
    run_first_batch(state)
    state.receive(ran(error=ZERO_DIVISION), T0 + 2 * S)
    assert state.receive(Failed("lost Redis"), T0 + 2 * S) == [ReleaseInterpreter()]  # the program's end given up
    assert state.receive(Failed("lost Redis"), T0 + 2 * S) == [ReleaseInterpreter()]  # the release still needed
    released(state, T0 + 2 * S)
    assert state.receive(Failed("lost Redis"), T0 + 2 * S) == []
    assert finish(state, T0 + 2 * S).status is SessionStatus.ERROR  # no cancel wait left


def test_an_outcome_the_phase_does_not_await_is_refused() -> None:
    state = machine()
    with pytest.raises(MachineMisuse):
        state.receive(ran(), T0)
    arrive(state, chunk(0))
    run_first_batch(state)
    with pytest.raises(MachineMisuse):
        state.next_actions(T0 + S)  # a batch runs: only its outcome moves the session on
