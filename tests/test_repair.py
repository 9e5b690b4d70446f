"""The repair loop's core: what ran, whether to try again, what the model is told, and the report."""

from __future__ import annotations

import pytest

from eager.common.protocol import (
    BatchStarted,
    ChunkReady,
    Delta,
    Gate,
    Output,
    SessionStarted,
    SessionStatus,
    Summary,
)
from eager import repair
from eager.executor_pool.interpreter import Interpreter

PROGRAM = ["def half(n):\n    return n / 0\n", "x = 4\n", "print('x is', x)\n", "y = half(x)\n", "print(y)\n"]


def _lines(chunks: list[str]) -> list[tuple[int, int]]:
    spans, line = [], 1
    for code in chunks:
        spans.append((line, line + code.count("\n") - 1))
        line += code.count("\n")
    return spans


def real_error(chunks: list[str]) -> dict:
    """The error dict the executor reports, from the real interpreter running the program."""
    with Interpreter() as interpreter:
        for code, (first, _) in zip(chunks, _lines(chunks)):
            result = interpreter.run(code, first, lambda stream, text: None, timeout=30)
            if result.error is not None:
                error = result.error
                return {"type": error.type, "message": error.message, "line": error.line, "traceback": error.traceback}
    raise AssertionError("the program did not fail")


def summary(status: SessionStatus, error: dict | None = None, kept: bool = True, **fields) -> Summary:
    return Summary(status=status, gate=Gate.EAGER, submitted_ns=1_000_000_000, finished_ns=3_000_000_000,
                   stdout=fields.pop("stdout", ""), error=error, interpreter_kept=kept, **fields)


def record_of(chunks: list[str], batches: list[tuple[int, int]], final: Summary, answer: str = "") -> repair.TurnRecord:
    record = repair.TurnRecord()
    record.receive(SessionStarted("host", 1, Gate.EAGER, 0, kept_state=False))
    record.receive(Delta(answer, 0))
    for seq, (code, (first, last)) in enumerate(zip(chunks, _lines(chunks))):
        record.receive(ChunkReady(seq, first, last, code, 0, 0, 0))
    for number, (first_seq, last_seq) in enumerate(batches):
        record.receive(BatchStarted(number, first_seq, last_seq, 0, 0, 0))
    record.receive(Output(0, "stdout", "x is 4\n", 0))
    record.receive(final)
    return record


@pytest.mark.parametrize("batches", [[(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 4)]], ids=["eager", "serial"])
def test_the_code_that_ran_ends_at_the_failing_top_level_statement_not_inside_the_function(batches):
    error = real_error(PROGRAM)
    assert error["line"] == 2  # the innermost frame is in half()...
    assert repair.failing_statement_line(error) == 5  # ...the statement that failed is the call
    record = record_of(PROGRAM, batches, summary(SessionStatus.ERROR, error))
    assert record.code_that_ran == "".join(PROGRAM[:4])
    assert record.lines_that_ran == (1, 5)


def test_feedback_names_the_error_the_code_the_output_and_the_kept_state():
    error = real_error(PROGRAM)
    text = repair.feedback(record_of(PROGRAM, [(0, 0), (1, 1), (2, 2), (3, 3)], summary(SessionStatus.ERROR, error)))
    assert "ZeroDivisionError at line 2: division by zero" in text
    assert "lines 1-5" in text and "y = half(x)\n" in text and "print(y)" not in text
    assert "x is 4" in text and "still running" in text
    assert 'program.py", line 5' in text  # the traceback's tail


def test_feedback_after_a_dead_interpreter_says_the_names_are_gone():
    record = record_of(PROGRAM[:2], [(0, 0), (1, 1)],
                       summary(SessionStatus.INTERPRETER_DIED, detail="exited with status 3", kept=False))
    text = repair.feedback(record)
    assert "did not finish (interpreter_died): exited with status 3" in text and "restarted" in text


def test_feedback_fences_outlast_backticks_in_the_output():
    record = record_of(["print('```')\n"], [(0, 0)], summary(SessionStatus.ERROR, {"type": "E", "message": "m",
                                                                                    "line": 1, "traceback": ""}))
    record.output = "```\n"
    assert "````\n```\n````" in repair.feedback(record)


def test_no_code_asks_for_a_code_block():
    record = record_of([], [], summary(SessionStatus.NO_CODE))
    text = repair.feedback(record)
    assert "no ```python code block" in text and "These lines" not in text


@pytest.mark.parametrize("status, message, expected", [
    (SessionStatus.OK, None, (True, False)),
    (SessionStatus.EXITED, "0", (True, False)),
    (SessionStatus.EXITED, "None", (True, False)),
    (SessionStatus.EXITED, "1", (False, True)),
    (SessionStatus.ERROR, "boom", (False, True)),
    (SessionStatus.SYNTAX_ERROR, "bad", (False, True)),
    (SessionStatus.TIMEOUT, None, (False, True)),
    (SessionStatus.LIMIT_EXCEEDED, None, (False, True)),
    (SessionStatus.NO_CODE, None, (False, True)),
    (SessionStatus.MODEL_ERROR, None, (False, False)),
    (SessionStatus.FAILED, None, (False, False)),
    (SessionStatus.CANCELLED, None, (False, False)),
    (SessionStatus.REJECTED, None, (False, False)),
])
def test_which_outcomes_are_success_and_which_another_answer_could_fix(status, message, expected):
    error = None if message is None else {"type": "SystemExit", "message": message, "line": 1, "traceback": ""}
    final = summary(status, error)
    assert (repair.succeeded(final), repair.repairable(final)) == expected


def test_next_messages_append_the_partial_answer_and_the_feedback():
    record = record_of(PROGRAM[:1], [(0, 0)], summary(SessionStatus.NO_CODE), answer="Let me think")
    task = [{"role": "user", "content": "task"}]
    messages = repair.next_messages(task, record, write=lambda r: "try again")
    assert messages == [*task, {"role": "assistant", "content": "Let me think"}, {"role": "user", "content": "try again"}]
    assert task == [{"role": "user", "content": "task"}]  # the caller's list is left alone


def _turn(status: SessionStatus, start_s: float, end_s: float, tokens: int, error: dict | None = None,
          finish: str = "stop") -> repair.TurnRecord:
    record = repair.TurnRecord()
    record.receive(Summary(status=status, gate=Gate.EAGER, submitted_ns=int(start_s * 1e9),
                           finished_ns=int(end_s * 1e9), stdout=f"{status.value}\n", error=error, tokens=tokens,
                           generation_end_ns=int((end_s - 0.5) * 1e9), execution_end_ns=int(end_s * 1e9),
                           finish_reason=finish, execution_busy_s=0.25))
    return record


def test_the_report_sums_turns_and_says_why_the_loop_stopped():
    error = {"type": "NameError", "message": "name 'dat' is not defined", "line": 3, "traceback": ""}
    records = [("a", _turn(SessionStatus.ERROR, 1.0, 2.0, 30, error, "cancelled")), ("b", _turn(SessionStatus.OK, 2.1, 4.0, 20))]
    report = repair.report(records, max_turns=3)
    assert report.succeeded and report.stopped_because == "succeeded" and report.status == "ok"
    assert report.wall_s == pytest.approx(3.0) and report.tokens == 50 and report.stdout == "ok\n"
    assert report.generation_s == pytest.approx(0.5 + 1.4) and report.execution_busy_s == pytest.approx(0.5)
    assert report.turns[0].cut_early and not report.turns[1].cut_early
    assert report.turns[0].error == "NameError at line 3: name 'dat' is not defined"
    assert report.to_json()["per_turn"][1]["session_id"] == "b"
    assert "succeeded after 2 turn(s)" in report.text() and "| 1 | error |" in report.text()

    failing = [("a", _turn(SessionStatus.ERROR, 1.0, 2.0, 30, error))] * 2
    assert repair.report(failing, max_turns=2).stopped_because == "turn limit"
    assert repair.report(failing[:1], max_turns=2, interrupted="gone").stopped_because == "interrupted: gone"
    lost = [("a", _turn(SessionStatus.MODEL_ERROR, 1.0, 2.0, 0))]
    assert repair.report(lost, max_turns=2).stopped_because == "not repairable: model_error"
