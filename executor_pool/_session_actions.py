"""What a session's state machine asks its shell to do: publish, cancel, read, run, end, finish."""

from __future__ import annotations

from dataclasses import dataclass

from eager.common.protocol import Cancel, Message, Summary
from eager.executor_pool.gate import Batch


@dataclass(frozen=True, slots=True)
class Publish:
    """Put the message on the session's events stream."""

    message: Message


@dataclass(frozen=True, slots=True)
class CancelUpstream:
    """Put the cancel on the session's cancel stream: the producer stops the model."""

    cancel: Cancel


@dataclass(frozen=True, slots=True)
class Read:
    """Take what arrived on the chunk and cancel streams, waiting for something until `until_ns` (None: not
    at all). `from_detector`: what is awaited comes from the detector, so the shell watches its lease meanwhile
    and reports `DetectorLost` instead of waiting for a detector that is gone."""

    until_ns: int | None
    from_detector: bool = False


@dataclass(frozen=True, slots=True)
class RunBatch:
    batch: Batch
    timeout_s: float


@dataclass(frozen=True, slots=True)
class EndProgram:
    """Let the interpreter end the program as python ends a script (atexit handlers, threads joined)."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class ReleaseInterpreter:
    """The session is done with its interpreter."""


@dataclass(frozen=True, slots=True)
class Finish:
    """End the session with this Summary (through the one atomic end every ender goes through)."""

    summary: Summary


Action = Publish | CancelUpstream | Read | RunBatch | EndProgram | ReleaseInterpreter | Finish
