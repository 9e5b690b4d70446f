"""A benchmark run read from its session's events, and the reports made from runs (pure)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    CodeStatus,
    DetectionEnd,
    FinishReason,
    Gate,
    GateAction,
    GateDecision,
    GenerationEnd,
    SessionStatus,
    Summary,
)
from eager.bench import report
from eager.bench.measure import Run, proof_tokens, record
from eager.quantiles import quantile

MS = 1_000_000
T0 = 1_000_000 * 1_000_000_000
TOKENS = ["a = ", "1\n", "b = ", "2\n", "c = ", "3\n"]  # 6 tokens, 18 characters


def at(ms: float) -> int:
    return T0 + int(ms * MS)


def chunk(seq: int, proven_ms: float, published_ms: float, emitted_at: int) -> ChunkReady:
    return ChunkReady(seq, seq + 1, seq + 1, TOKENS[2 * seq] + TOKENS[2 * seq + 1], emitted_at, at(proven_ms),
                      at(published_ms))


def session(gate: Gate, batches: list[tuple[int, int, float, float]], held: tuple[int, ...] = (),
            stdout: str = "", status: SessionStatus = SessionStatus.OK) -> list:
    """Three chunks proven at 100, 200 and 300 ms (published 2 ms later), generation ending at 320 ms."""
    chunks = [chunk(0, 100, 102, 10), chunk(1, 200, 202, 16), chunk(2, 300, 302, 18)]
    end = GenerationEnd(FinishReason.STOP, at(320), 6, first_token_ns=at(50))
    events: list = [*chunks, DetectionEnd(CodeStatus.COMPLETE, 3, end, at(321))]
    events += [GateDecision(seq, seq + 1, seq + 1, GateAction.HOLD, "held", "strict", seq + 1, at(1)) for seq in held]
    for number, (first, last, start_ms, end_ms) in enumerate(batches):
        events += [BatchStarted(number, first, last, first + 1, last + 1, at(start_ms)),
                   BatchFinished(number, True, at(start_ms), at(end_ms))]
    last_end = at(batches[-1][3]) if batches else None
    events.append(Summary(status, gate, T0, at(400), stdout, first_token_ns=at(50), generation_end_ns=at(320),
                          execution_end_ns=last_end, chunks=3, batches=len(batches)))
    return events


def run_of(events: list, gate: str = "eager") -> Run:
    return record("t", "s", "p", 0.05, 100.0, TOKENS, events)


def test_proof_points_count_the_tokens_that_had_arrived() -> None:
    assert proof_tokens(TOKENS, [4, 5, 6, 18, 99]) == [1, 2, 2, 6, 6]


def test_an_eager_run_with_one_batch_per_chunk() -> None:
    run = run_of(session(Gate.EAGER, [(0, 0, 103, 150), (1, 1, 203, 210), (2, 2, 303, 330)]))
    assert run.gate == "eager" and run.status == "ok" and run.chunks == 3
    assert [b.exec_s for b in run.batches] == pytest.approx([0.047, 0.007, 0.027])
    assert [b.proof_token for b in run.batches] == [3, 5, 6]
    assert run.e2e_s == pytest.approx(0.330)
    # ready at the proving deltas (100, 200, 300 ms), each runs at once: f = 0.3 + 0.027
    assert run.ideal_s == pytest.approx(0.327)
    assert run.gap_s == pytest.approx(0.003)
    assert run.detection_lag_s == pytest.approx(0.002)
    assert run.dispatch_s == pytest.approx(0.001)  # published at 102/202/302, started a millisecond later
    assert run.batching_s == pytest.approx(0.0)
    assert run.non_overlapped_s == pytest.approx(0.010)
    # the model: tokens 3, 5 and 6 arrive at 0.05 + (k - 1) / 100 s (70, 90, 100 ms), before execution catches up
    assert run.predicted_s == pytest.approx(0.07 + 0.047 + 0.007 + 0.027)


def test_a_batch_that_gathers_chunks_shows_the_wait_it_added() -> None:
    run = run_of(session(Gate.BATCH, [(0, 1, 205, 260), (2, 2, 303, 310)]))
    first = run.batches[0]
    assert first.ready_s == pytest.approx(0.200) and first.runnable_s == pytest.approx(0.202)
    assert run.batching_s == pytest.approx((0.100 + 0.0) / 2)  # chunk 0 waited 100 ms for chunk 1
    assert run.dispatch_s == pytest.approx((0.003 + 0.001) / 2)
    assert run.ideal_s == pytest.approx(0.300 + 0.007)


def test_an_interpreter_still_busy_delays_the_next_batch_without_blaming_dispatch() -> None:
    run = run_of(session(Gate.EAGER, [(0, 0, 103, 250), (1, 2, 251, 260)]))
    assert run.batches[1].runnable_s == pytest.approx(0.302)  # its last chunk came at 302 ms
    assert run.batches[0].runnable_s == pytest.approx(0.102)
    assert run.ideal_s == pytest.approx(max(0.100 + 0.147, 0.300) + 0.009)


def test_serial_waits_for_the_program_end_and_is_bounded_by_generation_plus_execution() -> None:
    run = run_of(session(Gate.SERIAL, [(0, 2, 322, 400)]))
    assert run.batches[0].runnable_s == pytest.approx(0.321)  # detection end, not the last chunk
    assert run.dispatch_s == pytest.approx(0.001)
    assert run.ideal_s == pytest.approx(0.320 + 0.078)
    assert run.predicted_s == pytest.approx(0.05 + 0.05 + 0.078)  # generation (6 tokens) + execution


def test_a_held_chunk_waits_for_the_program_end_without_counting_as_dispatch() -> None:
    run = run_of(session(Gate.EAGER, [(0, 0, 103, 150), (1, 2, 322, 330)], held=(1,)))
    assert run.batches[1].runnable_s == pytest.approx(0.321)
    assert run.dispatch_s == pytest.approx(0.001)


def test_a_session_without_batches_has_no_ideal_or_prediction() -> None:
    run = run_of(session(Gate.EAGER, [], status=SessionStatus.NO_CODE))
    assert run.batches == () and run.ideal_s == 0.0 and run.predicted_s == 0.0 and run.status == "no_code"


def pair(task: str, serial_e2e: float, eager_e2e: float, stdout: str = "x\n") -> list[Run]:
    base = run_of(session(Gate.SERIAL, [(0, 2, 322, 400)], stdout="x\n"))
    return [dataclasses.replace(base, task=task, e2e_s=serial_e2e, non_overlapped_s=0.08),
            dataclasses.replace(base, task=task, gate="eager", e2e_s=eager_e2e, non_overlapped_s=0.004,
                                ideal_s=eager_e2e - 0.002, stdout=stdout)]


def test_reductions_are_paired_with_the_serial_run_of_the_same_task() -> None:
    runs = pair("a", 1.0, 0.8) + pair("b", 2.0, 1.9) + pair("c", 4.0, 2.0)
    (serial, eager) = report.rows(runs)
    assert serial.gate == "serial" and serial.reduction_p50 == 0.0
    assert eager.runs == 3
    assert eager.reduction_p50 == pytest.approx(0.2)  # ratios 0.8, 0.95, 0.5
    assert eager.worst_ratio == pytest.approx(0.95)
    assert eager.non_overlapped_reduction_p50 == pytest.approx(0.95)
    assert eager.within_ideal == 1.0 and eager.same_output == 1.0


def test_a_run_whose_output_differs_from_serial_is_reported() -> None:
    runs = pair("a", 1.0, 0.8) + pair("b", 1.0, 0.8, stdout="y\n")
    assert [(run.task, run.gate) for run in report.failures(runs)] == [("b", "eager")]
    assert report.rows(runs)[1].same_output == 0.5
    assert "- b (p, eager): ok" in report.markdown(runs)


def test_the_markdown_has_a_table_per_set_and_profile_and_the_targets() -> None:
    text = report.markdown(pair("a", 1.0, 0.8))
    assert "### s, profile `p`" in text
    assert text.count("\n| eager |") == 1 and text.count("\n| serial |") == 1
    assert "end-to-end never worse than serial by more than 2.0 %: worst run 0.800x (met)" in text


def test_runs_survive_a_json_round_trip(tmp_path: Path) -> None:
    runs = pair("a", 1.0, 0.8)
    report.write_json(runs, tmp_path / "runs.json")
    assert report.read_json(tmp_path / "runs.json") == runs


@pytest.mark.parametrize(("q", "expected"), [(0.5, 3), (0.9, 5), (0.1, 1), (1.0, 5)])
def test_quantiles_are_nearest_rank(q: float, expected: float) -> None:
    assert quantile([5, 1, 4, 2, 3], q) == expected
