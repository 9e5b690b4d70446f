"""The gate: which pending chunks run, and when. Pure: messages in, batches out.

`eager` runs whatever is pending the moment the interpreter is free, so chunks that
arrived while a batch ran go together as the next batch (dynamic batching). `serial`
waits for the end of generation and runs the whole program as one batch: the
baseline, on the same machinery, so an A/B run measures only the paradigm.
A syntax error stops both: serial runs nothing, eager runs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.protocol import ChunkReady, CodeInvalid, CodeStatus, DetectionEnd, Gate, Message


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


class GateError(ValueError):
    """Chunks out of order or after the end: the detector broke its contract."""


class GateState:
    def __init__(self, policy: Gate) -> None:
        self.policy = Gate(policy)
        self._pending: list[ChunkReady] = []
        self._next_seq = 0
        self._batches = 0
        self.invalid: CodeInvalid | None = None
        self.end: DetectionEnd | None = None

    def receive(self, message: Message) -> None:
        if isinstance(message, ChunkReady):
            if self.end is not None:
                raise GateError(f"chunk {message.seq} after the end of detection")
            if message.seq != self._next_seq:
                raise GateError(f"chunk {message.seq} arrived, expected {self._next_seq}")
            self._next_seq += 1
            self._pending.append(message)
        elif isinstance(message, CodeInvalid):
            self.invalid = message
            self._pending.clear()
        elif isinstance(message, DetectionEnd):
            self.end = message
            if message.status is not CodeStatus.COMPLETE:
                self._pending.clear()
        else:
            raise GateError(f"the gate does not take {message.kind} messages")

    @property
    def chunks_received(self) -> int:
        return self._next_seq

    @property
    def batches(self) -> int:
        return self._batches

    def next_batch(self) -> Batch | None:
        """Ask when the interpreter is free; None means nothing may run now."""
        if not self._pending or self.invalid is not None:
            return None
        if self.policy is Gate.SERIAL and self.end is None:
            return None
        batch = Batch(self._batches, tuple(self._pending))
        self._batches += 1
        self._pending = []
        return batch

    @property
    def finished(self) -> bool:
        """Nothing more will ever run: the code is invalid, or detection ended and all of it ran."""
        return self.invalid is not None or (self.end is not None and not self._pending)
