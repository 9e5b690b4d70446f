"""The repair loop's core: what a turn did, whether to try again, what to tell the model, and the report.

Plain data in, plain data out (events of a session in, the next turn's messages and a report out),
so every rule is tested without a stack; `eager.client.Client.solve` does the I/O. When early error
interruption stops a session, the model gets back what a developer would look at: the error, the
code that ran up to it, the output so far, and whether the interpreter still holds what that code
defined (the next turn runs in the same one). A turn whose code came as tool calls gets it back as
those calls' results (`eager.tool_results`), not as a user message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eager.common.protocol import (
    BatchStarted,
    ChunkReady,
    CodeTool,
    Delta,
    DetectionEnd,
    Message,
    Output,
    SessionStarted,
    SessionStatus,
    Summary,
    ToolCall,
)
from eager.executor_pool._runner import program_file, program_filename
from eager.tool_results import tool_messages

# What the program did wrong, so another answer may do better. The rest are the model's or the
# system's failures (model_error, failed, rejected, cancelled): asking the model again does not help.
REPAIRABLE = frozenset({
    SessionStatus.ERROR, SessionStatus.SYNTAX_ERROR, SessionStatus.EXITED, SessionStatus.NO_CODE,
    SessionStatus.TIMEOUT, SessionStatus.LIMIT_EXCEEDED, SessionStatus.INTERPRETER_DIED,
})
SUCCESS_EXIT_CODES = frozenset({"0", "None", ""})  # sys.exit(), sys.exit(0): the program chose to end, and succeeded
OUTPUT_TAIL_CHARS = 2000
TRACEBACK_TAIL_LINES = 12


def failing_statement_line(error: dict[str, Any], turn: int = 1) -> int | None:
    """The line of the top-level statement that raised: the traceback's outermost frame in the turn's program.
    The error's own line is the innermost one, which is inside a function when a call fails."""
    frame = re.compile(rf'File "(?:[^"]*/)?{re.escape(program_file(program_filename(turn)) or "")}", line (\d+)')
    outermost = frame.search(str(error.get("traceback") or ""))
    return int(outermost.group(1)) if outermost else error.get("line")


def succeeded(summary: Summary) -> bool:
    if summary.status is SessionStatus.OK:
        return True
    return summary.status is SessionStatus.EXITED and str((summary.error or {}).get("message", "")) in SUCCESS_EXIT_CODES


def repairable(summary: Summary) -> bool:
    """Whether another turn could fix what went wrong: the code failed, not the model or the system."""
    return not succeeded(summary) and summary.status in REPAIRABLE


@dataclass
class TurnRecord:
    """One turn as its events told it; feed every event of the session, in order. `tool`: the session's code
    tool (`SessionRequest.tool`), when its code came as that tool's calls."""

    tool: CodeTool | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)  # the model's calls, as generation reported them
    answer: str = ""
    chunks: dict[int, ChunkReady] = field(default_factory=dict)
    ran_through: int = -1  # the last chunk seq a batch started with
    output: str = ""
    started: SessionStarted | None = None
    summary: Summary | None = None

    def receive(self, message: Message) -> None:
        if isinstance(message, Delta):
            self.answer += message.text
        elif isinstance(message, ChunkReady):
            self.chunks[message.seq] = message
        elif isinstance(message, BatchStarted):
            self.ran_through = max(self.ran_through, message.last_seq)
        elif isinstance(message, Output):
            self.output += message.text
        elif isinstance(message, SessionStarted):
            self.started = message
        elif isinstance(message, Summary):
            self.summary = message
        elif isinstance(message, DetectionEnd):
            self.tool_calls = message.generation.tool_calls

    def _ran(self) -> list[ChunkReady]:
        """The statements the interpreter ran, the failing one included, in program order: those of the batches
        that started, up to the error's line (a serial batch holds the whole program, but stops there)."""
        error = self.summary.error if self.summary is not None else None
        last_line = failing_statement_line(error, self.summary.turn) if error and self.summary else None
        return [chunk for seq, chunk in sorted(self.chunks.items())
                if seq <= self.ran_through and (last_line is None or chunk.start_line <= last_line)]

    @property
    def code_that_ran(self) -> str:
        return "".join(chunk.code for chunk in self._ran())

    @property
    def lines_that_ran(self) -> tuple[int, int] | None:
        ran = self._ran()
        return (ran[0].start_line, ran[-1].end_line) if ran else None


def _fenced(text: str, language: str = "") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"


def _what_went_wrong(summary: Summary, tool: CodeTool | None) -> str:
    error = summary.error or {}
    where = f" at line {error['line']}" if error.get("line") else ""
    if summary.status is SessionStatus.NO_CODE:
        return (f"Your answer did not call the `{tool.name}` tool, so nothing ran." if tool else
                "Your answer had no ```python code block, so nothing ran.")
    if summary.status in (SessionStatus.ERROR, SessionStatus.SYNTAX_ERROR, SessionStatus.EXITED) and error:
        text = f"Your program stopped with {error.get('type')}{where}: {error.get('message')}"
        traceback = "\n".join(str(error.get("traceback") or "").strip().splitlines()[-TRACEBACK_TAIL_LINES:])
        return text + (f"\n\n{_fenced(traceback)}" if traceback else "")
    return f"Your program did not finish ({summary.status.value}): {summary.detail or 'no detail'}"


def feedback(record: TurnRecord) -> str:
    """The next user turn: what went wrong, what ran, what it printed, and what the interpreter still holds."""
    assert record.summary is not None
    parts = [_what_went_wrong(record.summary, record.tool)]
    next_code = f"your next `{record.tool.name}` call" if record.tool else "your next code block"
    if record.code_that_ran:
        first, last = record.lines_that_ran or (0, 0)
        parts.append(f"These lines of your code ran (lines {first}-{last}), the last one failing:\n\n"
                     f"{_fenced(record.code_that_ran, 'python')}")
    if record.output:
        tail = record.output[-OUTPUT_TAIL_CHARS:]
        cut = "the last part of " if len(tail) < len(record.output) else ""
        parts.append(f"Output so far ({cut}what it printed):\n\n{_fenced(tail)}")
    if record.summary.interpreter_kept and record.code_that_ran:
        parts.append("The interpreter is still running: the names those lines defined still exist, and "
                     f"{next_code} runs in the same interpreter, after them.")
    elif record.code_that_ran:
        parts.append("The interpreter was restarted: nothing those lines defined exists any more.")
    parts.append(f"Call `{record.tool.name}` with code that fixes this and completes the task." if record.tool else
                 "Answer with one ```python code block that fixes this and completes the task.")
    return "\n\n".join(parts)


Feedback = Callable[[TurnRecord], str]


def next_messages(messages: list[dict[str, Any]], record: TurnRecord, write: Feedback = feedback) -> list[dict[str, Any]]:
    """The conversation so far, the model's (possibly cut) answer, and the feedback: as the next user turn, or,
    when the model called tools, as the results of its calls."""
    if record.tool is not None and record.tool_calls:
        assert record.summary is not None
        line = failing_statement_line(record.summary.error, record.summary.turn) if record.summary.error else None
        return [*messages, *tool_messages(record.tool_calls, record.tool, line, write(record))]
    return [*messages, {"role": "assistant", "content": record.answer}, {"role": "user", "content": write(record)}]


def _seconds(start_ns: int | None, end_ns: int | None) -> float | None:
    return None if start_ns is None or end_ns is None else (end_ns - start_ns) / 1e9


@dataclass(frozen=True)
class TurnReport:
    turn: int
    session_id: str
    status: str
    e2e_s: float
    ttft_s: float | None
    generation_s: float | None
    non_overlapped_s: float | None
    execution_busy_s: float
    tokens: int | None
    finish_reason: str | None
    cut_early: bool  # early error interruption stopped the model mid-answer
    kept_state: bool  # ran in the previous turn's interpreter, with its names
    error: str | None

    @classmethod
    def of(cls, turn: int, session_id: str, record: TurnRecord) -> TurnReport:
        summary = record.summary
        assert summary is not None
        error = summary.error
        return cls(
            turn=turn, session_id=session_id, status=summary.status.value, e2e_s=summary.e2e_s,
            ttft_s=summary.ttft_s, generation_s=summary.generation_s, non_overlapped_s=summary.non_overlapped_s,
            execution_busy_s=summary.execution_busy_s, tokens=summary.tokens, finish_reason=summary.finish_reason,
            cut_early=summary.finish_reason == "cancelled",
            kept_state=bool(record.started and record.started.kept_state),
            error=None if error is None else f"{error.get('type')} at line {error.get('line')}: {error.get('message')}",
        )


@dataclass(frozen=True)
class RepairReport:
    """Per turn and in total: the user's question is how long until a program that works, and at what cost."""

    turns: tuple[TurnReport, ...]
    succeeded: bool
    stopped_because: str  # succeeded | turn limit | not repairable: <status>
    wall_s: float  # the first turn's request to the last turn's end
    stdout: str  # the last turn's

    @property
    def status(self) -> str:
        return self.turns[-1].status

    @property
    def tokens(self) -> int:
        return sum(turn.tokens or 0 for turn in self.turns)

    @property
    def generation_s(self) -> float:
        return sum(turn.generation_s or 0.0 for turn in self.turns)

    @property
    def execution_busy_s(self) -> float:
        return sum(turn.execution_busy_s for turn in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "repair_report", "succeeded": self.succeeded, "status": self.status,
            "stopped_because": self.stopped_because, "turns": len(self.turns), "wall_s": self.wall_s,
            "tokens": self.tokens, "generation_s": self.generation_s, "execution_busy_s": self.execution_busy_s,
            "stdout": self.stdout, "per_turn": [vars(turn) for turn in self.turns],
        }

    def text(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = [("| turn | status | e2e s | ttft s | generation s | non-overlapped s | tokens | cut early | "
                 "kept state | error |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for t in self.turns:
            rows.append(f"| {t.turn} | {t.status} | {seconds(t.e2e_s)} | {seconds(t.ttft_s)} | "
                        f"{seconds(t.generation_s)} | {seconds(t.non_overlapped_s)} | {t.tokens or '-'} | "
                        f"{'yes' if t.cut_early else 'no'} | {'yes' if t.kept_state else 'no'} | {t.error or ''} |")
        verdict = "succeeded" if self.succeeded else f"did not succeed ({self.stopped_because})"
        rows.append(f"\n{verdict} after {len(self.turns)} turn(s): {self.wall_s:.3f} s in "
                    f"all, {self.generation_s:.3f} s generating, {self.tokens} tokens, "
                    f"{self.execution_busy_s:.3f} s executing")
        return "\n".join(rows)


def report(records: list[tuple[str, TurnRecord]], max_turns: int, interrupted: str | None = None) -> RepairReport:
    """The loop's report from its turns' (session id, record) pairs, in order; `interrupted` says why a
    further turn could not be sent (the conversation was lost), if that is how the loop ended."""
    first, last = records[0][1].summary, records[-1][1].summary
    assert first is not None and last is not None
    ok = succeeded(last)
    stopped = ("succeeded" if ok else f"interrupted: {interrupted}" if interrupted
               else "turn limit" if len(records) >= max_turns and repairable(last)
               else f"not repairable: {last.status.value}")
    end_ns = last.execution_end_ns or last.finished_ns
    return RepairReport(
        turns=tuple(TurnReport.of(number, session_id, record) for number, (session_id, record) in enumerate(records, 1)),
        succeeded=ok, stopped_because=stopped, wall_s=_seconds(first.submitted_ns, end_ns) or 0.0, stdout=last.stdout,
    )


class Loop:
    """The repair loop's decisions without its I/O, for the sync and the asyncio client alike: what the next
    turn sends (None: stop), a record for each turn's events, and the report."""

    def __init__(self, messages: list[dict[str, Any]], repairs: int, write_feedback: Feedback = feedback) -> None:
        self.max_turns = repairs + 1
        self._messages = messages
        self._write = write_feedback
        self._records: list[tuple[str, TurnRecord]] = []
        self._interrupted: str | None = None

    @property
    def turns(self) -> int:
        """Turns started so far: the number of the turn being read."""
        return len(self._records)

    def next_turn(self) -> list[dict[str, Any]] | None:
        """The messages of the next turn, or None when the last one succeeded, cannot be repaired, was the
        last allowed, or could not be sent."""
        if self._interrupted is not None:
            return None
        if not self._records:
            return self._messages
        last = self._records[-1][1]
        assert last.summary is not None, "a turn's events always end with its Summary"
        if len(self._records) >= self.max_turns or not repairable(last.summary):
            return None
        self._messages = next_messages(self._messages, last, self._write)
        return self._messages

    def record(self, session_id: str, tool: CodeTool | None = None) -> TurnRecord:
        """The record to feed the new turn's events to; `tool`: the turn's code tool (its feedback goes back as
        the results of the model's calls)."""
        record = TurnRecord(tool=tool)
        self._records.append((session_id, record))
        return record

    def interrupted(self, reason: str) -> None:
        """The next turn could not be sent (the conversation was lost)."""
        self._interrupted = reason

    def report(self) -> RepairReport:
        return report(self._records, self.max_turns, self._interrupted)
