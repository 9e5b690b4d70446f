"""What each stage observes, from the messages it already handles (pure: no Redis, no HTTP).

Metrics live in the process's default registry and only grow, so each test reads the
samples it cares about before and after, and asserts the difference.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    CodeStatus,
    DetectionEnd,
    FinishReason,
    Gate,
    GenerationEnd,
    SessionStarted,
    SessionStatus,
    Summary,
)
from eager.detector.metrics import observe_published
from eager.executor_pool.metrics import observe_session
from eager.producer.metrics import observe_generation

MS = 1_000_000
S = 1_000_000_000


class Samples:
    """Differences of registry samples between construction and `delta`."""

    def __init__(self, *wanted: tuple[str, dict[str, str]]) -> None:
        self.before = {self._key(name, labels): self._value(name, labels) for name, labels in wanted}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple:
        return name, tuple(sorted(labels.items()))

    @staticmethod
    def _value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def delta(self, name: str, **labels: str) -> float:
        return self._value(name, labels) - self.before[self._key(name, labels)]


def bucket(name: str, le: str, **labels: str) -> tuple[str, dict[str, str]]:
    return f"{name}_bucket", {**labels, "le": le}


def chunk(seq: int, published_ns: int) -> ChunkReady:
    return ChunkReady(seq, seq + 1, seq + 1, f"x{seq} = {seq}\n", 10 * (seq + 1), published_ns - 1 * MS, published_ns)


def session_events(gate: Gate, status: SessionStatus, t0: int) -> list:
    """A session of three chunks in two batches: chunk 0 alone, chunks 1-2 together."""
    return [
        SessionStarted("host", 1, gate, t0 + 40 * MS, warm=True),
        BatchStarted(0, 0, 0, 1, 1, t0 + 500 * MS),
        BatchFinished(0, True, t0 + 500 * MS, t0 + 700 * MS),
        BatchStarted(1, 1, 2, 2, 3, t0 + 900 * MS),
        BatchFinished(1, True, t0 + 900 * MS, t0 + 1400 * MS),
        Summary(status, gate, t0, t0 + 1500 * MS, "", first_token_ns=t0 + 300 * MS,
                generation_end_ns=t0 + 1 * S, execution_end_ns=t0 + 1400 * MS, chunks=3, batches=2),
    ]


def test_a_session_is_observed_from_its_streams() -> None:
    gate = {"gate": "batch"}
    samples = Samples(
        ("eager_executor_sessions_total", {**gate, "status": "ok"}),
        ("eager_executor_end_to_end_seconds_count", gate),
        ("eager_executor_end_to_end_seconds_sum", gate),
        ("eager_executor_non_overlapped_seconds_sum", gate),
        ("eager_executor_job_start_seconds_sum", {}),
        ("eager_executor_batch_seconds_count", gate),
        ("eager_executor_batch_seconds_sum", gate),
        ("eager_executor_batch_chunks_sum", gate),
        ("eager_executor_dispatch_seconds_count", gate),
        ("eager_executor_dispatch_seconds_sum", gate),
        bucket("eager_executor_dispatch_seconds", "0.0001", **gate),
    )
    t0 = 1_000 * S
    chunks = [chunk(0, t0 + 499 * MS), chunk(1, t0 + 800 * MS), chunk(2, t0 + 899_950_000)]
    observe_session(chunks, session_events(Gate.BATCH, SessionStatus.OK, t0))

    assert samples.delta("eager_executor_sessions_total", **gate, status="ok") == 1
    assert samples.delta("eager_executor_end_to_end_seconds_count", **gate) == 1
    assert samples.delta("eager_executor_end_to_end_seconds_sum", **gate) == pytest.approx(1.4)
    assert samples.delta("eager_executor_non_overlapped_seconds_sum", **gate) == pytest.approx(0.4)
    assert samples.delta("eager_executor_job_start_seconds_sum") == pytest.approx(0.04)
    assert samples.delta("eager_executor_batch_seconds_count", **gate) == 2
    assert samples.delta("eager_executor_batch_seconds_sum", **gate) == pytest.approx(0.7)
    assert samples.delta("eager_executor_batch_chunks_sum", **gate) == 3
    # each chunk waits from its own publication to its batch's start: 1 ms, 100 ms, 50 us
    assert samples.delta("eager_executor_dispatch_seconds_count", **gate) == 3
    assert samples.delta("eager_executor_dispatch_seconds_sum", **gate) == pytest.approx(0.10105)
    assert samples.delta("eager_executor_dispatch_seconds_bucket", **gate, le="0.0001") == 1


@pytest.mark.parametrize("status", [SessionStatus.TIMEOUT, SessionStatus.LIMIT_EXCEEDED,
                                    SessionStatus.INTERPRETER_DIED, SessionStatus.CANCELLED])
def test_a_killed_interpreter_counts_as_a_sandbox_kill(status: SessionStatus) -> None:
    samples = Samples(("eager_executor_sandbox_kills_total", {"reason": status.value}),
                      ("eager_executor_sessions_total", {"gate": "eager", "status": status.value}))
    observe_session([], session_events(Gate.EAGER, status, 2_000 * S))
    assert samples.delta("eager_executor_sandbox_kills_total", reason=status.value) == 1
    assert samples.delta("eager_executor_sessions_total", gate="eager", status=status.value) == 1


@pytest.mark.parametrize("status", [SessionStatus.OK, SessionStatus.ERROR, SessionStatus.SYNTAX_ERROR])
def test_code_that_ends_by_itself_is_no_sandbox_kill(status: SessionStatus) -> None:
    samples = Samples(("eager_executor_sandbox_kills_total", {"reason": status.value}))
    observe_session([], session_events(Gate.EAGER, status, 3_000 * S))
    assert samples.delta("eager_executor_sandbox_kills_total", reason=status.value) == 0


def test_a_session_without_a_summary_is_not_observed() -> None:
    samples = Samples(("eager_executor_end_to_end_seconds_count", {"gate": "serial"}))
    observe_session([], session_events(Gate.SERIAL, SessionStatus.OK, 4_000 * S)[:-1])
    assert samples.delta("eager_executor_end_to_end_seconds_count", gate="serial") == 0


def test_later_turns_of_a_conversation_are_counted_by_status_and_kept_state() -> None:
    labels = [("eager_executor_later_turns_total", {"status": s, "kept_state": k}) for s in ("ok", "error")
              for k in ("true", "false")]
    samples = Samples(*labels)
    t0 = 6_000 * S
    observe_session([], session_events(Gate.EAGER, SessionStatus.ERROR, t0))  # a first turn: not a later one
    kept, fresh = SessionStarted("host", 1, Gate.EAGER, t0, turn=2, kept_state=True), SessionStarted(
        "host", 2, Gate.EAGER, t0, turn=3, kept_state=False)
    observe_session([], [kept, Summary(SessionStatus.OK, Gate.EAGER, t0, t0 + S, "", turn=2, interpreter_kept=True)])
    observe_session([], [fresh, Summary(SessionStatus.ERROR, Gate.EAGER, t0, t0 + S, "", turn=3)])
    assert [samples.delta(name, **labels) for name, labels in labels] == [1, 0, 0, 1]


def test_a_session_that_never_started_still_counts_its_status() -> None:
    """A request rejected before any interpreter ran: no start, no batches, one terminal status."""
    samples = Samples(("eager_executor_sessions_total", {"gate": "eager", "status": "rejected"}),
                      ("eager_executor_job_start_seconds_count", {}))
    summary = Summary(SessionStatus.REJECTED, Gate.EAGER, 5_000 * S, 5_000 * S + 3 * MS, "")
    observe_session([], [summary])
    assert samples.delta("eager_executor_sessions_total", gate="eager", status="rejected") == 1
    assert samples.delta("eager_executor_job_start_seconds_count") == 0


def generation_end(reason: FinishReason, tokens: int, t0: int, **extra: object) -> GenerationEnd:
    return GenerationEnd(reason, t0 + 2 * S, tokens, first_token_ns=t0 + 300 * MS, **extra)


def test_a_generation_reports_first_token_rate_and_tokens() -> None:
    model = {"model": "metrics-test-a"}
    samples = Samples(("eager_producer_time_to_first_token_seconds_sum", model),
                      ("eager_producer_generation_seconds_sum", model),
                      ("eager_producer_tokens_per_second_sum", model),
                      ("eager_producer_tokens_total", model),
                      ("eager_producer_generations_total", {**model, "finish_reason": "stop"}))
    observe_generation("metrics-test-a", 10 * S, generation_end(FinishReason.STOP, 86, 10 * S), None, 500)
    assert samples.delta("eager_producer_time_to_first_token_seconds_sum", **model) == pytest.approx(0.3)
    assert samples.delta("eager_producer_generation_seconds_sum", **model) == pytest.approx(2.0)
    assert samples.delta("eager_producer_tokens_per_second_sum", **model) == pytest.approx(85 / 1.7)
    assert samples.delta("eager_producer_tokens_total", **model) == 86
    assert samples.delta("eager_producer_generations_total", **model, finish_reason="stop") == 1


def test_a_cancel_reports_who_how_fast_and_the_budget_it_spared() -> None:
    model = {"model": "metrics-test-b"}
    samples = Samples(("eager_producer_cancels_total", {"by": "executor"}),
                      ("eager_producer_cancel_latency_seconds_sum", {}),
                      ("eager_producer_token_budget_spared_total", model),
                      ("eager_producer_generations_total", {**model, "finish_reason": "cancelled"}))
    end = generation_end(FinishReason.CANCELLED, 40, 20 * S, cancel_latency_s=0.004)
    observe_generation("metrics-test-b", 20 * S, end, "executor", 500)
    assert samples.delta("eager_producer_cancels_total", by="executor") == 1
    assert samples.delta("eager_producer_cancel_latency_seconds_sum") == pytest.approx(0.004)
    assert samples.delta("eager_producer_token_budget_spared_total", **model) == 460
    assert samples.delta("eager_producer_generations_total", **model, finish_reason="cancelled") == 1


def test_a_generation_that_failed_before_any_token_has_no_first_token_or_rate() -> None:
    model = {"model": "metrics-test-c"}
    samples = Samples(("eager_producer_time_to_first_token_seconds_count", model),
                      ("eager_producer_tokens_per_second_count", model),
                      ("eager_producer_generations_total", {**model, "finish_reason": "error"}))
    end = GenerationEnd(FinishReason.ERROR, 30 * S + 5 * MS, 0, error="HTTP 500")
    observe_generation("metrics-test-c", 30 * S, end, None, None)
    assert samples.delta("eager_producer_time_to_first_token_seconds_count", **model) == 0
    assert samples.delta("eager_producer_tokens_per_second_count", **model) == 0
    assert samples.delta("eager_producer_generations_total", **model, finish_reason="error") == 1


def test_the_detector_reports_lag_per_chunk_and_chunks_per_session() -> None:
    samples = Samples(("eager_detector_lag_seconds_count", {}), ("eager_detector_lag_seconds_sum", {}),
                      ("eager_detector_chunks_per_session_sum", {}),
                      ("eager_detector_sessions_total", {"status": "complete"}))
    t0 = 40 * S
    first = ChunkReady(0, 1, 1, "a = 1\n", 6, t0, t0 + 1 * MS)
    second = ChunkReady(1, 2, 2, "b = 2\n", 12, t0 + 10 * MS, t0 + 11 * MS)
    end = DetectionEnd(CodeStatus.COMPLETE, 2, generation_end(FinishReason.STOP, 5, t0), t0 + 12 * MS)
    observe_published([first, second, end], t0 + 12 * MS)
    assert samples.delta("eager_detector_lag_seconds_count") == 2
    assert samples.delta("eager_detector_lag_seconds_sum") == pytest.approx(0.012 + 0.002)
    assert samples.delta("eager_detector_chunks_per_session_sum") == 2
    assert samples.delta("eager_detector_sessions_total", status="complete") == 1
