"""The gate: which pending chunks run, and when. Pure: messages and the time in, decisions and batches out.

Policies (per session):
- `eager` runs whatever may run the moment the interpreter is free, so chunks that arrived
  while a batch ran go together as the next batch (dynamic batching).
- `serial` waits for the end of generation and runs the whole program as one batch: the
  baseline, on the same machinery, so an A/B run measures only the paradigm.
- `batch` is in between: it runs once N chunks may run or the oldest of them has waited M ms,
  whichever comes first. The clock is an argument (`next_batch(now_ns)`), never read here, and
  `wake_at_ns()` tells the shell when the answer would change with no new message.

Under `eager` and `batch` each chunk is also judged by the static gate (`static_gate.py`): a
definition waits to run with the next chunk; a held chunk waits until the program is complete
and valid, and everything after it waits behind it, so from there the rest runs serially. A
syntax error stops every policy: nothing pending runs, held chunks included.
"""

from __future__ import annotations

from dataclasses import dataclass

from eager.common.protocol import ChunkReady, CodeInvalid, CodeStatus, DetectionEnd, Gate, GateAction, Message
from eager.executor_pool.static_gate import RUN, Decision, Rules, StaticGate
from eager.common.errors import EagerError


@dataclass(frozen=True, slots=True)
class Batch:
    number: int
    chunks: tuple[ChunkReady, ...]

    @property
    def code(self) -> str:
        return "".join(chunk.code for chunk in self.chunks)

    @property
    def first_line(self) -> int:
        return self.chunks[0].start_line

    @property
    def last_line(self) -> int:
        return self.chunks[-1].end_line


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The `batch` policy's thresholds: run at `chunks` waiting chunks or after `wait_ms`, whichever first."""

    chunks: int = 4
    wait_ms: int = 200

    def __post_init__(self) -> None:
        if self.chunks < 1 or self.wait_ms < 0:
            raise ValueError(f"batch limits need at least 1 chunk and 0 ms, got {self.chunks} and {self.wait_ms}")


class GateError(EagerError, ValueError):
    """Chunks out of order or after the end: the detector broke its contract."""


class GateState:
    def __init__(self, policy: Gate, rules: Rules | None = None, limits: BatchLimits | None = None) -> None:
        self.policy = Gate(policy)
        self.limits = limits or BatchLimits()
        self.rules = rules or Rules()
        self._static = StaticGate(self.rules)
        self._pending: list[tuple[ChunkReady, Decision]] = []
        self._holding = False  # a chunk was held: it and everything after it wait for the end
        self._next_seq = 0
        self._batches = 0
        self.invalid: CodeInvalid | None = None
        self.end: DetectionEnd | None = None

    def receive(self, message: Message) -> Decision | None:
        """Take one message from the chunk stream. For a chunk the static gate judged, return its decision
        (the shell publishes holds and merges); None for other messages, under `serial` (which runs nothing
        early, so there is nothing to judge) and after a hold (everything after it waits anyway)."""
        if isinstance(message, ChunkReady):
            if message.seq < self._next_seq:
                return None  # published twice (a detector taken over while still alive): run once
            if self.end is not None:
                raise GateError(f"chunk {message.seq} after the end of detection")
            if message.seq != self._next_seq:
                raise GateError(f"chunk {message.seq} arrived, expected {self._next_seq}")
            self._next_seq += 1
            decision = None
            if self.policy is not Gate.SERIAL and not self._holding:
                decision = self._static.judge(message.code, message.start_line)
                self._holding = decision.action is GateAction.HOLD
            self._pending.append((message, decision or RUN))
            return decision
        if isinstance(message, CodeInvalid):
            self.invalid = message
            self._pending.clear()
        elif isinstance(message, DetectionEnd):
            if self.end is not None:
                return None  # published twice, as above
            self.end = message
            if message.status is not CodeStatus.COMPLETE:
                self._pending.clear()
        else:
            raise GateError(f"the gate does not take {message.kind} messages")
        return None

    @property
    def chunks_received(self) -> int:
        return self._next_seq

    @property
    def batches(self) -> int:
        return self._batches

    def _runnable(self) -> list[ChunkReady]:
        """The pending chunks that may run now: once the program is complete and valid, all of them;
        before that, those before the first held chunk, without trailing definitions (they wait for
        the chunk that uses them)."""
        if self.end is not None:
            return [chunk for chunk, _ in self._pending]
        runnable: list[ChunkReady] = []
        waiting: list[ChunkReady] = []  # definitions not yet followed by a chunk that runs
        for chunk, decision in self._pending:
            if decision.action is GateAction.HOLD:
                break
            waiting.append(chunk)
            if decision.action is GateAction.RUN:
                runnable += waiting
                waiting = []
        return runnable

    def _due_ns(self, runnable: list[ChunkReady]) -> int | None:
        """When the `batch` policy runs what may run, if not yet now: the oldest one's detection plus the wait."""
        if self.policy is not Gate.BATCH or self.end is not None or len(runnable) >= self.limits.chunks:
            return None
        return runnable[0].detected_ns + self.limits.wait_ms * 1_000_000

    def next_batch(self, now_ns: int) -> Batch | None:
        """Ask when the interpreter is free, with the current time; None means nothing may run now."""
        if self.invalid is not None or (self.policy is Gate.SERIAL and self.end is None):
            return None
        runnable = self._runnable()
        if not runnable:
            return None
        due = self._due_ns(runnable)
        if due is not None and now_ns < due:
            return None
        batch = Batch(self._batches, tuple(runnable))
        self._batches += 1
        self._pending = self._pending[len(runnable):]
        return batch

    def wake_at_ns(self) -> int | None:
        """When `next_batch` would give a batch without any new message (the `batch` policy's wait running
        out), so the shell bounds its blocking read by it; None if only a message can change the answer."""
        if self.invalid is not None or self.end is not None:
            return None
        runnable = self._runnable()
        return self._due_ns(runnable) if runnable else None

    @property
    def finished(self) -> bool:
        """Nothing more will ever run: the code is invalid, or detection ended and all of it ran."""
        return self.invalid is not None or (self.end is not None and not self._pending)
