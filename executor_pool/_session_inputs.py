"""What a session's state machine is told: messages that arrived, what the interpreter did, and failures.

Each input carries the time the shell observed it, so the machine never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from eager.common.protocol import Message
from eager.executor_pool.interpreter import BatchResult


@dataclass(frozen=True, slots=True)
class InterpreterReady:
    """The session has its interpreter, ready for its program."""

    worker: str
    pid: int
    isolation: str  # the sandbox layers it got, "+"-joined
    warm: bool  # from the worker's pool
    kept: bool  # carried over from the conversation's previous turn, with its names
    at_ns: int


@dataclass(frozen=True, slots=True)
class Arrived:
    """A message from the session's chunk stream (chunks, a syntax error, detection's end) or its cancel stream."""

    message: Message
    at_ns: int


@dataclass(frozen=True, slots=True)
class Printed:
    """The program wrote to stdout or stderr, while a batch ran or while the interpreter ended the program."""

    stream: str
    text: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Showed:
    """The program showed a figure (a PNG)."""

    png: bytes
    at_ns: int


@dataclass(frozen=True, slots=True)
class BatchReturned:
    """The batch ran to its end, or to the program's exception (`result.error`)."""

    result: BatchResult
    at_ns: int


class Kill(StrEnum):
    """Why the interpreter, not the program, ended a batch."""

    TIMEOUT = "timeout"  # the batch outran its timeout
    LIMIT = "limit"  # the sandbox killed it for a resource limit
    DIED = "died"  # the interpreter exited (a segfault, os._exit, a broken protocol)


@dataclass(frozen=True, slots=True)
class BatchKilled:
    cause: Kill
    detail: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class ProgramEnded:
    """The interpreter ended the program as python ends a script; `timed_out` says how, if it did not in time."""

    at_ns: int
    timed_out: str | None = None


@dataclass(frozen=True, slots=True)
class InterpreterReleased:
    """The session let its interpreter go; `kept`: it lives on for the conversation's next turn."""

    kept: bool
    at_ns: int


@dataclass(frozen=True, slots=True)
class DetectorLost:
    """No detector holds the session any more, and none took it over."""

    detail: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Broke:
    """The executor itself failed (Redis lost, the conversation's setup raised, a broken contract)."""

    detail: str
    at_ns: int


Input = (InterpreterReady | Arrived | Printed | Showed | BatchReturned | BatchKilled | ProgramEnded
         | InterpreterReleased | DetectorLost | Broke)
