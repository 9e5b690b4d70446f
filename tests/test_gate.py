"""The gate's decisions, as plain data: which chunks run together and when (the clock is an argument)."""

import pytest

from eager.common.protocol import (
    ChunkReady,
    CodeInvalid,
    CodeStatus,
    DetectionEnd,
    FinishReason,
    Gate,
    GateAction,
    GateDecision,
    GenerationEnd,
    ProtocolError,
    SessionRequest,
    decode,
    encode,
)
from eager.executor_pool.gate import BatchLimits, GateError, GateState
from eager.executor_pool.static_gate import Preset, Rules

MS = 1_000_000


def chunk(seq: int, code: str | None = None, line: int | None = None, at_ns: int = 0) -> ChunkReady:
    code = code if code is not None else f"x{seq} = {seq}\n"
    start = line if line is not None else seq + 1
    return ChunkReady(seq=seq, start_line=start, end_line=start + code.count("\n") - 1, code=code, emitted_at=0,
                      delta_ns=at_ns, detected_ns=at_ns)


def program(*codes: str, at_ns: int = 0) -> list[ChunkReady]:
    """A program's chunks with their real line numbers."""
    chunks, line = [], 1
    for seq, code in enumerate(codes):
        chunks.append(chunk(seq, code, line, at_ns))
        line += code.count("\n")
    return chunks


def end(status: CodeStatus = CodeStatus.COMPLETE, chunks: int = 0) -> DetectionEnd:
    return DetectionEnd(status, chunks, GenerationEnd(FinishReason.STOP, 1, 1), 2)


def seqs(batch) -> list[int]:
    return [c.seq for c in batch.chunks]


STRICT = Rules(Preset.STRICT)
CSV_PIPELINE = program(
    "import os\n",
    "rows = [(i, i * i) for i in range(5)]\n",
    "path = os.path.join(os.getcwd(), 'squares.csv')\n",
    "with open(path, 'w') as f:\n    for i, sq in rows:\n        f.write(f'{i},{sq}\\n')\n",
    "print(open(path).read())\n",
)


# --- eager and serial ------------------------------------------------------------------------------

def test_eager_runs_a_chunk_as_soon_as_it_arrives():
    gate = GateState(Gate.EAGER)
    assert gate.next_batch(0) is None
    assert gate.receive(chunk(0)).action is GateAction.RUN
    batch = gate.next_batch(0)
    assert seqs(batch) == [0] and batch.number == 0
    assert gate.next_batch(0) is None and not gate.finished


def test_eager_batches_everything_pending_when_the_interpreter_frees_up():
    gate = GateState(Gate.EAGER)
    gate.receive(chunk(0))
    first = gate.next_batch(0)
    for seq in (1, 2, 3):  # arrive while batch 0 runs
        gate.receive(chunk(seq))
    second = gate.next_batch(0)
    assert seqs(second) == [1, 2, 3]
    assert second.code == "x1 = 1\nx2 = 2\nx3 = 3\n"
    assert (second.first_line, second.last_line, second.number) == (2, 4, 1)
    assert first.number == 0


def test_serial_waits_for_the_end_then_runs_the_whole_program_once_and_judges_nothing():
    gate = GateState(Gate.SERIAL, STRICT)
    for c in CSV_PIPELINE:
        assert gate.receive(c) is None
        assert gate.next_batch(10**18) is None
    gate.receive(end(chunks=len(CSV_PIPELINE)))
    batch = gate.next_batch(0)
    assert seqs(batch) == [0, 1, 2, 3, 4]
    assert gate.next_batch(0) is None and gate.finished and gate.batches == 1


@pytest.mark.parametrize("policy", list(Gate))
def test_a_syntax_error_stops_every_policy(policy):
    gate = GateState(policy)
    gate.receive(chunk(0))
    gate.receive(CodeInvalid(line=3, message="invalid syntax", detected_ns=0))
    assert gate.next_batch(10**18) is None and gate.wake_at_ns() is None
    assert gate.finished and gate.invalid.line == 3


@pytest.mark.parametrize("status", [CodeStatus.CANCELLED, CodeStatus.GENERATION_FAILED])
def test_an_unfinished_generation_runs_nothing_more(status):
    gate = GateState(Gate.EAGER)
    gate.receive(chunk(0))
    gate.receive(end(status, 1))
    assert gate.next_batch(0) is None and gate.finished


def test_a_chunk_or_end_published_twice_runs_once():
    """A detector taken over while still alive may publish what its successor publishes too."""
    gate = GateState(Gate.EAGER)
    gate.receive(chunk(0))
    assert gate.receive(chunk(0)) is None
    gate.receive(chunk(1))
    assert seqs(gate.next_batch(0)) == [0, 1]
    gate.receive(end(chunks=2))
    gate.receive(chunk(1))
    gate.receive(end(chunks=2))
    assert gate.next_batch(0) is None and gate.chunks_received == 2


def test_out_of_order_or_late_chunks_are_refused():
    gate = GateState(Gate.EAGER)
    with pytest.raises(GateError):
        gate.receive(chunk(1))
    gate.receive(chunk(0))
    gate.receive(end(chunks=1))
    with pytest.raises(GateError):
        gate.receive(chunk(1))


# --- definitions merge -----------------------------------------------------------------------------

@pytest.mark.parametrize("policy", [Gate.EAGER, Gate.BATCH])
def test_definitions_wait_and_run_with_their_first_use(policy):
    gate = GateState(policy, limits=BatchLimits(chunks=1))
    chunks = program("def f(x):\n    return x + 1\n", "class P:\n    pass\n", "y = f(1)\n", "print(y)\n")
    assert gate.receive(chunks[0]).action is GateAction.MERGE
    assert gate.next_batch(0) is None
    assert gate.receive(chunks[1]).action is GateAction.MERGE
    assert gate.next_batch(0) is None and gate.wake_at_ns() is None
    assert gate.receive(chunks[2]).action is GateAction.RUN
    batch = gate.next_batch(0)
    assert seqs(batch) == [0, 1, 2] and (batch.first_line, batch.last_line) == (1, 5)
    gate.receive(chunks[3])
    assert seqs(gate.next_batch(0)) == [3]


def test_a_definition_at_the_end_of_the_program_runs():
    gate = GateState(Gate.EAGER)
    chunks = program("x = 1\n", "def f():\n    return x\n")
    for c in chunks:
        gate.receive(c)
    assert seqs(gate.next_batch(0)) == [0]
    assert gate.next_batch(0) is None and not gate.finished
    gate.receive(end(chunks=2))
    assert seqs(gate.next_batch(0)) == [1] and gate.finished


def test_definitions_of_an_unfinished_program_never_run():
    gate = GateState(Gate.EAGER)
    gate.receive(program("def f():\n    return 1\n")[0])
    gate.receive(end(CodeStatus.CANCELLED, 1))
    assert gate.next_batch(0) is None and gate.finished


# --- held chunks -----------------------------------------------------------------------------------

def test_a_held_chunk_waits_for_the_end_and_everything_after_it_runs_serially_from_there():
    gate = GateState(Gate.EAGER, STRICT)
    chunks = program("import os\n", "x = 1\n", "os.remove('old.csv')\n", "y = 2\n", "print(x + y)\n")
    assert seqs(_arrive(gate, chunks[0])) == [0]
    assert seqs(_arrive(gate, chunks[1])) == [1]
    held = gate.receive(chunks[2])
    assert held.action is GateAction.HOLD and held.line == 3
    assert held.reason == "calls os.remove at line 3 (external side effect; preset strict)"
    assert gate.next_batch(10**18) is None
    assert gate.receive(chunks[3]) is None and gate.receive(chunks[4]) is None  # not judged: they wait anyway
    assert gate.next_batch(10**18) is None and gate.wake_at_ns() is None and not gate.finished
    gate.receive(end(chunks=5))
    assert seqs(gate.next_batch(0)) == [2, 3, 4]
    assert gate.finished and gate.batches == 3


def test_a_chunk_the_static_gate_cannot_judge_is_held_and_runs_with_the_rest_at_the_end():
    gate = GateState(Gate.EAGER)
    chunks = program("x = 1\n", "total = " + " + ".join(["1"] * 10_000) + "\n", "print(x)\n")
    assert seqs(_arrive(gate, chunks[0])) == [0]
    held = gate.receive(chunks[1])
    assert held.action is GateAction.HOLD and held.line == 2 and "RecursionError" in held.reason
    gate.receive(chunks[2])
    assert gate.next_batch(0) is None
    gate.receive(end(chunks=3))
    assert seqs(gate.next_batch(0)) == [1, 2]


def test_chunks_before_a_held_one_still_run_when_the_interpreter_frees_up():
    gate = GateState(Gate.EAGER, STRICT)
    chunks = program("import subprocess as sp\n", "a = 1\n", "sp.run(['true'])\n", "b = 2\n")
    for c in chunks:  # all arrive while an earlier batch runs
        gate.receive(c)
    assert seqs(gate.next_batch(0)) == [0, 1]
    assert gate.next_batch(0) is None
    gate.receive(end(chunks=4))
    assert seqs(gate.next_batch(0)) == [2, 3]


def test_definitions_before_a_held_use_wait_with_it():
    gate = GateState(Gate.EAGER, STRICT)
    chunks = program("import os\n", "def clean(p):\n    os.remove(p)\n", "clean('x')\n")
    gate.receive(chunks[0])
    assert gate.receive(chunks[1]).action is GateAction.MERGE
    held = gate.receive(chunks[2])
    assert held.action is GateAction.HOLD
    assert held.reason == ("uses clean at line 4, defined at line 2, which calls os.remove at line 3 "
                           "(external side effect; preset strict)")
    assert seqs(gate.next_batch(0)) == [0]
    gate.receive(end(chunks=3))
    assert seqs(gate.next_batch(0)) == [1, 2]


def test_the_csv_pipeline_runs_eagerly_under_sandboxed():
    gate = GateState(Gate.EAGER, Rules(Preset.SANDBOXED))
    for c in CSV_PIPELINE:
        assert gate.receive(c).action is GateAction.RUN
        assert seqs(gate.next_batch(0)) == [c.seq]


def test_the_csv_pipeline_is_held_at_the_write_under_strict():
    gate = GateState(Gate.EAGER, STRICT)
    ran = []
    for c in CSV_PIPELINE:
        decision = gate.receive(c)
        if c.seq == 3:
            assert decision.action is GateAction.HOLD and decision.line == 4
            assert decision.reason == "calls open(..., 'w') at line 4 (file write; preset strict)"
        if (batch := gate.next_batch(0)) is not None:
            ran += seqs(batch)
    assert ran == [0, 1, 2]
    gate.receive(end(chunks=5))
    assert seqs(gate.next_batch(0)) == [3, 4]


@pytest.mark.parametrize("policy", [Gate.EAGER, Gate.BATCH])
def test_a_syntax_error_after_a_held_chunk_runs_nothing_more(policy):
    """The valid prefix already ran; the held chunk never does, since the program is not valid."""
    gate = GateState(policy, STRICT, BatchLimits(chunks=1))
    chunks = program("print('before')\n", "import shutil\n", "shutil.rmtree('data')\n", "print('after')\n")
    assert seqs(_arrive(gate, chunks[0])) == [0]
    assert seqs(_arrive(gate, chunks[1])) == [1]
    assert gate.receive(chunks[2]).action is GateAction.HOLD
    gate.receive(chunks[3])
    gate.receive(CodeInvalid(line=5, message="'(' was never closed", detected_ns=0))
    assert gate.next_batch(10**18) is None and gate.finished and gate.invalid.line == 5
    gate.receive(end(CodeStatus.INVALID, 4))
    assert gate.next_batch(10**18) is None and gate.batches == 2


def test_a_held_chunk_of_a_cancelled_generation_never_runs():
    gate = GateState(Gate.EAGER, STRICT)
    gate.receive(program("import os\nos.system('reboot')\n")[0])
    gate.receive(end(CodeStatus.CANCELLED, 1))
    assert gate.next_batch(0) is None and gate.finished


def test_the_decision_travels_as_an_event():
    decision = GateState(Gate.EAGER, STRICT).receive(chunk(0, "eval('1')\n"))
    event = GateDecision(0, 1, 1, decision.action, decision.reason, "strict", decision.line, 5)
    assert decode(encode(event)) == event and event.action is GateAction.HOLD


# --- batch policy ----------------------------------------------------------------------------------

def test_batch_runs_when_n_chunks_wait():
    gate = GateState(Gate.BATCH, limits=BatchLimits(chunks=3, wait_ms=100))
    gate.receive(chunk(0, at_ns=0))
    assert gate.next_batch(0) is None
    gate.receive(chunk(1, at_ns=10 * MS))
    assert gate.next_batch(10 * MS) is None
    gate.receive(chunk(2, at_ns=20 * MS))
    assert seqs(gate.next_batch(20 * MS)) == [0, 1, 2]
    assert gate.wake_at_ns() is None


def test_batch_runs_when_the_oldest_chunk_has_waited_m_ms():
    gate = GateState(Gate.BATCH, limits=BatchLimits(chunks=3, wait_ms=100))
    gate.receive(chunk(0, at_ns=1000 * MS))
    gate.receive(chunk(1, at_ns=1050 * MS))
    assert gate.wake_at_ns() == 1100 * MS
    assert gate.next_batch(1099 * MS) is None
    assert seqs(gate.next_batch(1100 * MS)) == [0, 1]
    assert gate.wake_at_ns() is None
    gate.receive(chunk(2, at_ns=1150 * MS))
    assert gate.wake_at_ns() == 1250 * MS
    assert seqs(gate.next_batch(1300 * MS)) == [2]


def test_batch_runs_what_is_left_at_the_end_at_once():
    gate = GateState(Gate.BATCH, limits=BatchLimits(chunks=10, wait_ms=10_000))
    gate.receive(chunk(0))
    gate.receive(end(chunks=1))
    assert gate.wake_at_ns() is None
    assert seqs(gate.next_batch(0)) == [0] and gate.finished


def test_batch_counts_only_chunks_that_may_run():
    gate = GateState(Gate.BATCH, STRICT, BatchLimits(chunks=2, wait_ms=100))
    chunks = program("def f():\n    return 1\n", "x = f()\n", "eval('x')\n", "y = 1\n", at_ns=0)
    gate.receive(chunks[0])
    assert gate.next_batch(10**18) is None and gate.wake_at_ns() is None  # a lone definition waits for its use
    gate.receive(chunks[1])
    assert seqs(gate.next_batch(0)) == [0, 1]
    gate.receive(chunks[2])
    gate.receive(chunks[3])
    assert gate.next_batch(10**18) is None and gate.wake_at_ns() is None  # held, and y waits behind it
    gate.receive(end(chunks=4))
    assert seqs(gate.next_batch(0)) == [2, 3]


@pytest.mark.parametrize("policy", [Gate.EAGER, Gate.SERIAL])
def test_only_the_batch_policy_waits_for_time(policy):
    gate = GateState(policy, limits=BatchLimits(chunks=5, wait_ms=100))
    gate.receive(chunk(0, at_ns=0))
    assert gate.wake_at_ns() is None


@pytest.mark.parametrize(("chunks", "wait_ms"), [(0, 100), (1, -1)])
def test_batch_limits_are_checked(chunks, wait_ms):
    with pytest.raises(ValueError):
        BatchLimits(chunks, wait_ms)


def _arrive(gate: GateState, c: ChunkReady):
    gate.receive(c)
    return gate.next_batch(0)


def test_the_human_view_shows_why_a_chunk_waits(capsys):
    from eager.cli.view import HumanView

    view = HumanView()
    view.show(GateDecision(3, 13, 14, GateAction.HOLD, "calls open(..., 'w') at line 13 (file write; preset strict)",
                           "strict", 13, 0))
    view.show(GateDecision(2, 8, 11, GateAction.MERGE, "definition of describe: runs with the next chunk", "strict",
                           None, 0))
    assert capsys.readouterr().out.splitlines() == [
        "  ⏸ holding lines 13-14: calls open(..., 'w') at line 13 (file write; preset strict)",
        "  ⋯ lines 8-11: definition of describe: runs with the next chunk",
    ]


@pytest.mark.parametrize("limits", [{"batch_chunks": 0}, {"batch_wait_ms": -1}, {"batch_chunks": "4"},
                                    {"batch_chunks": True}])
def test_a_session_s_batch_limits_are_checked_before_anything_is_sent(limits):
    with pytest.raises(ProtocolError):
        SessionRequest(session_id="s", model="m", submitted_ns=1, messages=[{"role": "user", "content": "x"}],
                       gate=Gate.BATCH, **limits)


def test_a_session_s_batch_limits_round_trip():
    request = SessionRequest(session_id="s", model="m", submitted_ns=1, prompt="x", gate="batch", batch_chunks=2,
                             batch_wait_ms=0)
    assert decode(encode(request)) == request and request.gate is Gate.BATCH
