"""What a session's state machine asks its shell to do, besides publishing protocol messages.

A protocol message among the actions is published where it belongs: a Cancel on the session's cancel
stream (the producer stops the model), a Summary as the session's one end (through the atomic end every
ender goes through), any other on its events stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from eager.common.protocol import Message
from eager.executor_pool.gate import Batch


@dataclass(frozen=True, slots=True)
class Read:
    """Take what arrived on the chunk and cancel streams, waiting for something until `until_ns` (None: not
    at all). `from_detector`: what is awaited comes from the detector, so the shell watches its lease
    meanwhile and reports a `Failed` instead of waiting for a detector that is gone."""

    until_ns: int | None
    from_detector: bool = False


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Run the batch in the interpreter, for `timeout_s` at the most; report its `BatchResult`, or a
    `BatchKilled`, and feed its output as it comes."""

    batch: Batch
    timeout_s: float


@dataclass(frozen=True, slots=True)
class EndProgram:
    """Let the interpreter end the program as python ends a script (atexit handlers run, threads are joined,
    finalizers print), within `timeout_s`; report `ProgramEnded`."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class ReleaseInterpreter:
    """The session is done with its interpreter: report `InterpreterReleased`."""


Action = Message | Read | RunBatch | EndProgram | ReleaseInterpreter
