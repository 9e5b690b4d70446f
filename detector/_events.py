"""What the detector tells its caller: chunks, the end of the code, or that the code cannot run.

Frozen dataclasses, as h11's events: the shell turns each into one wire message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    """Top-level statements that no later token can change.

    Lines are lines of the generated program (the answer's code blocks joined, from 1);
    `emitted_at` is how many characters of the answer had arrived when it became final.
    """

    seq: int
    start_line: int
    end_line: int
    code: str
    emitted_at: int


@dataclass(frozen=True, slots=True)
class CodeEnded:
    """The answer ended and every chunk of it was emitted."""

    chunks: int
    lines: int


@dataclass(frozen=True, slots=True)
class CodeInvalid:
    """The generated program has a syntax error at `line`: nothing after it may run."""

    line: int
    message: str
    chunks: int
    error_type: str = "SyntaxError"


class NeedData:
    """Nothing more can be said until more of the answer (or its end) arrives."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

Event = Chunk | CodeEnded | CodeInvalid
