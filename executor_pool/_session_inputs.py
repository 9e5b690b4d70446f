"""What a session's state machine is told, besides the protocol messages it reads (chunks, a syntax error,
detection's end, a cancel) and the interpreter's `BatchResult`: what the shell saw of the interpreter and
its own failures. The time comes with each input, as an argument of `SessionState.receive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from eager.common.protocol import Message
from eager.executor_pool.interpreter import BatchResult


@dataclass(frozen=True, slots=True)
class InterpreterReady:
    """The session has its interpreter, ready for its program: from the worker's pool (`warm`), or kept
    from the conversation's previous turn with its names (`kept`); `isolation` lists its sandbox layers."""

    worker: str
    pid: int
    isolation: str
    warm: bool
    kept: bool


@dataclass(frozen=True, slots=True)
class Printed:
    """The program wrote to stdout or stderr (`stream`), while a batch ran or while the interpreter ended
    the program."""

    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class Showed:
    """The program showed a matplotlib figure, as a PNG."""

    png: bytes


@dataclass(frozen=True, slots=True)
class BatchKilled:
    """The batch never returned: the interpreter was killed or died (`cause`), and `detail` says how."""

    cause: Kill
    detail: str


class Kill(StrEnum):
    """Why the interpreter, not the program, ended a batch."""

    TIMEOUT = "timeout"  # the batch outran its timeout
    LIMIT = "limit"  # the sandbox killed it for a resource limit
    DIED = "died"  # the interpreter exited (a segfault, os._exit, a broken protocol)


@dataclass(frozen=True, slots=True)
class ProgramEnded:
    """The interpreter ended the program as python ends a script; `timed_out` says how it did not in time
    (it was killed then: a thread that never stops must not hold the executor)."""

    timed_out: str | None = None


@dataclass(frozen=True, slots=True)
class InterpreterReleased:
    """The session let its interpreter go, which lives on for the conversation's next turn if `kept`.
    Released before the wait for generation's end, so a pool or the next turn is not held by it."""

    kept: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """The session cannot go on: the executor lost Redis, the conversation's setup code raised, a message
    broke the protocol, or no detector holds the session any more (and none took it over)."""

    detail: str


Input = (Message | BatchResult | InterpreterReady | Printed | Showed | BatchKilled | ProgramEnded
         | InterpreterReleased | Failed)
