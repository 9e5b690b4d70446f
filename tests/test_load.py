"""The load generator's pure part: samples to reports, percentiles, where a sweep bends, the table."""

from __future__ import annotations

import dataclasses
import json

import pytest

from eager.common.protocol import Gate, SessionStatus, Summary
from eager.load import (
    CLIENT_ERROR,
    OVERLOADED,
    REST,
    Percentiles,
    Report,
    Sample,
    aggregate,
    bend,
    cpu_bound,
    cpu_per_session,
    cpu_table,
    executor_counts,
    gains,
    markdown,
    quantile,
    sweep_summary,
    text,
)

S = 1_000_000_000  # ns per second


def ok(submitted_s: float, started_s: float, e2e_s: float, done_s: float | None = None) -> Sample:
    done_ns = int((done_s or submitted_s + e2e_s) * S)
    return Sample(SessionStatus.OK.value, int(submitted_s * S), done_ns, int(started_s * S), done_ns, e2e_s, 0.3)


def point(executors: int, throughput: float) -> Report:
    """A point that finished `throughput * 10` sessions ok in 10 s."""
    return Report(executors, 16, int(throughput * 10), 10.0, {"ok": int(throughput * 10)}, None, None, None)


def test_quantile_is_the_nearest_rank():
    values = list(range(1, 11))  # 1..10
    assert quantile(values, 0.5) == 5
    assert quantile(values, 0.9) == 9  # 0.9 * 10 is 9.000000000000002 in floating point: still rank 9
    assert quantile(values, 0.99) == 10
    assert quantile(values, 0) == 1 and quantile(values, 1) == 10
    assert quantile([7.0], 0.99) == 7.0
    assert quantile(list(range(100, 0, -1)), 0.99) == 99  # unsorted in, rank 99 of 100
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1], 1.5)


def test_aggregate_counts_every_outcome_and_measures_only_ok_sessions():
    samples = [
        ok(0.0, 0.1, 2.0),
        ok(0.0, 2.1, 4.0),
        ok(1.0, 4.1, 5.0, done_s=6.5),  # the last terminal event: the run took 6.5 s
        Sample(SessionStatus.ERROR.value, 1 * S, 3 * S, 1 * S, 3 * S, 0.5, 0.3),
        Sample(SessionStatus.TIMEOUT.value, 2 * S, 5 * S),  # made by the client: no executor started it
        Sample(OVERLOADED, 2 * S, 2 * S, detail="overloaded"),
        Sample(CLIENT_ERROR, 3 * S, 3 * S, detail="ConnectionError()"),
    ]
    report = aggregate(samples, executors=2, concurrency=4, cpu_busy=0.5, cpu_cores=2)
    assert report.sessions == 7 and report.accepted == 5 and report.ok == 3
    assert report.statuses == {"client_error": 1, "error": 1, "ok": 3, "overloaded": 1, "timeout": 1}
    assert report.errors == {"client_error": 1, "error": 1, "overloaded": 1, "timeout": 1}
    assert report.wall_s == pytest.approx(6.5)
    assert report.throughput == pytest.approx(3 / 6.5)
    assert report.e2e_s == Percentiles(4.0, 5.0, 5.0)  # of the ok sessions' 2.0, 4.0, 5.0
    assert report.queue_wait_s == Percentiles(pytest.approx(2.1), pytest.approx(3.1), pytest.approx(3.1))
    assert report.ttft_s == Percentiles(0.3, 0.3, 0.3)
    data = report.to_json()
    assert json.loads(json.dumps(data))["e2e_s"] == {"p50": 4.0, "p90": 5.0, "p99": 5.0}
    assert data["ok"] == 3 and data["accepted"] == 5 and data["throughput"] == pytest.approx(3 / 6.5)
    assert "ok 3 of 5 accepted" in text(report) and "overloaded 1" in text(report)
    assert report.details == {"client_error": "ConnectionError()", "overloaded": "overloaded"}
    assert "\n    client_error, the first: ConnectionError()" in text(report)


def test_a_sample_from_a_summary_carries_its_queue_wait():
    summary = Summary(status=SessionStatus.OK, gate=Gate.EAGER, submitted_ns=10 * S, finished_ns=14 * S,
                      stdout="", first_token_ns=int(10.3 * S), execution_end_ns=13 * S, started_ns=12 * S)
    assert summary.queue_wait_s == pytest.approx(2.0) and summary.report()["queue_wait_s"] == pytest.approx(2.0)
    sample = Sample.of(summary, done_ns=int(14.1 * S))
    assert sample.accepted and sample.status == "ok"
    assert sample.queue_wait_s == pytest.approx(2.0) and sample.e2e_s == pytest.approx(3.0)
    assert sample.ttft_s == pytest.approx(0.3) and sample.finished_ns == 14 * S
    never_started = Summary(status=SessionStatus.FAILED, gate=Gate.EAGER, submitted_ns=S, finished_ns=2 * S, stdout="")
    assert never_started.queue_wait_s is None and Sample.of(never_started, 2 * S).queue_wait_s is None


def test_a_run_with_nothing_ok_has_no_latencies_and_no_throughput():
    report = aggregate([Sample(OVERLOADED, S, S), Sample(OVERLOADED, S, 2 * S)], executors=1, concurrency=2)
    assert report.ok == 0 and report.accepted == 0 and report.throughput == 0.0
    assert report.e2e_s is None and report.queue_wait_s is None
    assert "| - s |" in markdown([report])
    with pytest.raises(ValueError):
        aggregate([], executors=1, concurrency=1)


def test_gains_and_the_bend():
    linear_then_flat = [point(1, 1.0), point(2, 2.0), point(4, 2.2), point(8, 2.1)]
    assert gains(linear_then_flat) == [None, pytest.approx(1.0), pytest.approx(0.1), pytest.approx(2.1 / 2.2 - 1)]
    assert bend(linear_then_flat) == 2
    assert bend([point(1, 1.0), point(2, 1.9), point(4, 3.7)]) is None  # scales all the way
    assert bend([point(1, 1.0), point(2, 1.1)]) == 1  # no gain from the first doubling
    assert bend(list(reversed(linear_then_flat))) == 2  # order of the points does not matter
    assert bend([point(4, 1.0)]) is None


def test_the_markdown_table_has_a_row_per_point():
    table = markdown([point(1, 1.0), point(2, 2.0)])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| executors |")
    assert lines[2].startswith("| 1 | 10 | 16 | 10.0 s | 1.00 | - |")
    assert lines[3].startswith("| 2 | 20 | 16 | 10.0 s | 2.00 | 1.00 |")
    assert lines[3].endswith("| - | none |")


def test_cpu_per_session_divides_by_the_sessions_that_ended_ok():
    measured = aggregate([ok(0, 0.1, 1.0), ok(0, 1.1, 2.0)], executors=1, concurrency=2,
                         cpu_s={REST: 0.4, "executor": 2.4, "load generator": 0.2})
    assert cpu_per_session(measured) == {"executor": pytest.approx(1.2), "load generator": pytest.approx(0.1),
                                         REST: pytest.approx(0.2)}
    table = cpu_table([measured, point(2, 1.0)]).splitlines()
    assert table[0] == f"| executors | executor | load generator | {REST} | all |"  # the rest last
    assert table[2] == "| 1 | 1.20 | 0.10 | 0.20 | 1.50 |" and table[3] == "| 2 | - | - | - | 0.00 |"
    assert cpu_table([point(1, 1.0)]) == "" and cpu_per_session(point(1, 1.0)) == {}
    assert cpu_bound(measured) is None  # cores unknown
    on_two = dataclasses.replace(measured, cpu_cores=2)
    assert cpu_bound(on_two) == pytest.approx(2 / 1.5) and on_two.to_json()["cpu_bound"] == pytest.approx(2 / 1.5)
    assert "CPU per session: executor 1.20 s, load generator 0.10 s, rest of the machine 0.20 s" in text(measured)


def test_executor_counts_and_the_sweep_summary():
    assert executor_counts(None, 3) == [3] and executor_counts("1,2,4,8", 3) == [1, 2, 4, 8]
    for bad in ("1,x", "0,2", "-1", ","):
        with pytest.raises(ValueError):
            executor_counts(bad, 1)
    summary = sweep_summary([point(1, 1.0), point(2, 1.9), point(4, 2.0)])
    assert summary.startswith("| executors |") and summary.endswith("throughput stops scaling after 2 executor(s)")
    assert sweep_summary([point(1, 1.0), point(2, 2.0)]).endswith("no bend within the sweep")
