"""The gate's decisions, as plain data: which chunks run together and when."""

import pytest

from common.protocol import ChunkReady, CodeInvalid, CodeStatus, DetectionEnd, FinishReason, Gate, GenerationEnd
from executor_pool.gate import GateError, GateState


def chunk(seq: int) -> ChunkReady:
    return ChunkReady(seq=seq, start_line=seq + 1, end_line=seq + 1, code=f"x{seq} = {seq}\n", emitted_at=0,
                      delta_ns=0, detected_ns=0)


def end(status: CodeStatus = CodeStatus.COMPLETE, chunks: int = 0) -> DetectionEnd:
    return DetectionEnd(status, chunks, GenerationEnd(FinishReason.STOP, 1, 1), 2)


def test_eager_runs_a_chunk_as_soon_as_it_arrives():
    gate = GateState(Gate.EAGER)
    assert gate.next_batch() is None
    gate.receive(chunk(0))
    batch = gate.next_batch()
    assert [c.seq for c in batch.chunks] == [0] and batch.number == 0
    assert gate.next_batch() is None and not gate.finished


def test_eager_batches_everything_pending_when_the_interpreter_frees_up():
    gate = GateState(Gate.EAGER)
    gate.receive(chunk(0))
    first = gate.next_batch()
    for seq in (1, 2, 3):  # arrive while batch 0 runs
        gate.receive(chunk(seq))
    second = gate.next_batch()
    assert [c.seq for c in second.chunks] == [1, 2, 3]
    assert second.code == "x1 = 1\nx2 = 2\nx3 = 3\n"
    assert (second.first_line, second.last_line, second.number) == (2, 4, 1)
    assert first.number == 0


def test_serial_waits_for_the_end_then_runs_the_whole_program_once():
    gate = GateState(Gate.SERIAL)
    for seq in range(3):
        gate.receive(chunk(seq))
        assert gate.next_batch() is None
    gate.receive(end(chunks=3))
    batch = gate.next_batch()
    assert [c.seq for c in batch.chunks] == [0, 1, 2]
    assert gate.next_batch() is None and gate.finished and gate.batches == 1


@pytest.mark.parametrize("policy", list(Gate))
def test_a_syntax_error_stops_both_policies(policy):
    gate = GateState(policy)
    gate.receive(chunk(0))
    gate.receive(CodeInvalid(line=3, message="invalid syntax", detected_ns=0))
    assert gate.next_batch() is None
    assert gate.finished and gate.invalid.line == 3


@pytest.mark.parametrize("status", [CodeStatus.CANCELLED, CodeStatus.GENERATION_FAILED])
def test_an_unfinished_generation_runs_nothing_more(status):
    gate = GateState(Gate.EAGER)
    gate.receive(chunk(0))
    gate.receive(end(status, 1))
    assert gate.next_batch() is None and gate.finished


def test_out_of_order_or_late_chunks_are_refused():
    gate = GateState(Gate.EAGER)
    with pytest.raises(GateError):
        gate.receive(chunk(1))
    gate.receive(chunk(0))
    gate.receive(end(chunks=1))
    with pytest.raises(GateError):
        gate.receive(chunk(1))
