"""The detector: feed the answer as it streams, get each top-level statement the moment it is final.

Sans-I/O in the manner of h11: `receive_data` with each delta, `receive_eof` at the end,
then `next_event` until it says NEED_DATA. Markdown extraction (`_fences`) feeds the
statement splitter (`_statements`), whose rules (`_rules`) never call a statement final
while a later token could still change it.
"""

from __future__ import annotations

from collections import deque

from eager.detector._events import NEED_DATA, Chunk, CodeEnded, CodeInvalid, Event, NeedData
from eager.detector._fences import BLOCK_END, BlockEnd, FenceReader
from eager.detector.lines import LineCount
from eager.detector._statements import Statements, StatementSplitter, SyntaxProblem
from eager.common.errors import EagerError

__all__ = ["Detector", "NEED_DATA", "Chunk", "CodeEnded", "CodeInvalid"]


class DetectorError(EagerError, RuntimeError):
    """The caller broke the protocol (data after the end)."""


class Detector:
    def __init__(self, raw: bool = False) -> None:
        """`raw`: the whole answer is Python (a completion model), not markdown with code blocks."""
        self._fences = None if raw else FenceReader()
        self._splitter = StatementSplitter()
        self._events: deque[Event] = deque()
        self._received = 0
        self._chunks = 0
        self._lines = LineCount()  # of the program: code blocks joined
        self._stopped = False  # a syntax error: nothing more is emitted
        self._ended = False

    def receive_data(self, data: str) -> None:
        if self._ended:
            raise DetectorError("data after receive_eof()")
        self._received += len(data)
        if self._stopped:
            return
        self._consume(self._fences.feed(data) if self._fences is not None else [data])

    def receive_eof(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._stopped:
            return
        self._consume(self._fences.eof() if self._fences is not None else [BLOCK_END])
        if not self._stopped:
            self._events.append(CodeEnded(self._chunks, self._lines.lines))

    def next_event(self) -> Event | NeedData:
        return self._events.popleft() if self._events else NEED_DATA

    def _consume(self, pieces: list[str | BlockEnd]) -> None:
        for piece in pieces:
            if not piece:
                continue
            if isinstance(piece, BlockEnd):
                results = self._splitter.end_block()
            else:
                self._lines.feed(piece)
                results = self._splitter.feed(piece)
            for result in results:
                if isinstance(result, Statements):
                    self._events.append(
                        Chunk(self._chunks, result.start_line, result.end_line, result.code, self._received)
                    )
                    self._chunks += 1
                elif isinstance(result, SyntaxProblem):
                    self._events.append(CodeInvalid(result.line, result.message, self._chunks, result.error_type))
                    self._stopped = True
                    return


def code_blocks(answer: str) -> list[str]:
    """The runnable code blocks of a complete markdown answer, each as the detector reads it."""
    reader = FenceReader()
    blocks, current = [], []
    for piece in [*reader.feed(answer), *reader.eof()]:
        if isinstance(piece, BlockEnd):
            blocks.append("".join(current))
            current = []
        else:
            current.append(piece)
    return blocks
