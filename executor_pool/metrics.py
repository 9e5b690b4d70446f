"""The executor's metrics, observed by the worker from what each session published.

RQ runs every session in a forked work horse that exits with `os._exit`; metrics recorded
there would die with it, and prometheus-client's multiprocess mode would leave files per
horse that every scrape reads forever. So horses record nothing: once a horse is gone, the
worker (one long-lived process, one registry) reads the session's chunk and event streams,
which carry every timestamp, and observes them. The scrape stays flat however many jobs ran.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from eager.common.metrics import COUNT_BUCKETS, LATENCY_BUCKETS, seconds_between
from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    Gate,
    Message,
    SessionStarted,
    SessionStatus,
    Summary,
)

SESSIONS = Counter("eager_executor_sessions_total", "Sessions by gate policy and terminal status", ["gate", "status"])
END_TO_END = Histogram("eager_executor_end_to_end_seconds", "From the request to the last execution result",
                       ["gate"], buckets=LATENCY_BUCKETS)
NON_OVERLAPPED = Histogram("eager_executor_non_overlapped_seconds",
                           "Execution left after generation ended (what eager hides)", ["gate"], buckets=LATENCY_BUCKETS)
JOB_START = Histogram("eager_executor_job_start_seconds", "From the request to its session running on an executor",
                      buckets=LATENCY_BUCKETS)
DISPATCH = Histogram("eager_executor_dispatch_seconds", "From a chunk being published to its batch starting to run",
                     ["gate"], buckets=LATENCY_BUCKETS)
BATCH = Histogram("eager_executor_batch_seconds", "Execution time of one batch", ["gate"], buckets=LATENCY_BUCKETS)
BATCH_CHUNKS = Histogram("eager_executor_batch_chunks", "Chunks per batch", ["gate"], buckets=COUNT_BUCKETS)
SANDBOX_KILLS = Counter("eager_executor_sandbox_kills_total", "Interpreters killed before their program ended, by reason",
                        ["reason"])
LATER_TURNS = Counter("eager_executor_later_turns_total",
                      "Sessions that were a conversation's second or later turn (a repair, an agent's next step), by "
                      "status and by whether they found the previous turn's interpreter", ["status", "kept_state"])
WARM_INTERPRETERS = Gauge("eager_executor_warm_interpreters", "Started interpreters waiting for a session")
QUEUE_DEPTH = Gauge("eager_executor_queue_depth", "Sessions enqueued and not yet started by any executor")

KILLED = frozenset({SessionStatus.TIMEOUT, SessionStatus.LIMIT_EXCEEDED, SessionStatus.INTERPRETER_DIED,
                    SessionStatus.CANCELLED})


def _declare() -> None:
    """Every series exists from the start at zero: rate() sees a first event only as a step from a value."""
    for gate in Gate:
        for status in SessionStatus:
            SESSIONS.labels(gate.value, status.value)
        for histogram in (END_TO_END, NON_OVERLAPPED, DISPATCH, BATCH, BATCH_CHUNKS):
            histogram.labels(gate.value)
    for reason in KILLED:
        SANDBOX_KILLS.labels(reason.value)
    for status in SessionStatus:
        for kept in ("true", "false"):
            LATER_TURNS.labels(status.value, kept)


_declare()


def watch(warm: Callable[[], float], queued: Callable[[], float]) -> None:
    """Gauges read at scrape time, from the pool and the queue."""
    WARM_INTERPRETERS.set_function(warm)
    QUEUE_DEPTH.set_function(queued)


def observe_session(chunks: list[Message], events: list[Message]) -> None:
    """One finished session, from its chunk stream and its event stream (which ends with the Summary)."""
    summary = next((e for e in reversed(events) if isinstance(e, Summary)), None)
    if summary is None:
        return
    gate = summary.gate.value
    SESSIONS.labels(gate, summary.status.value).inc()
    END_TO_END.labels(gate).observe(summary.e2e_s)
    if summary.non_overlapped_s is not None:
        NON_OVERLAPPED.labels(gate).observe(summary.non_overlapped_s)
    if summary.status in KILLED:
        SANDBOX_KILLS.labels(summary.status.value).inc()
    started = next((e for e in events if isinstance(e, SessionStarted)), None)
    if started is not None:
        JOB_START.observe(seconds_between(summary.submitted_ns, started.at_ns) or 0.0)
    if summary.turn > 1:
        LATER_TURNS.labels(summary.status.value, "true" if started is not None and started.kept_state else "false").inc()
    published = {c.seq: c.detected_ns for c in chunks if isinstance(c, ChunkReady)}
    batches = {e.batch: e for e in events if isinstance(e, BatchStarted)}
    for finished in (e for e in events if isinstance(e, BatchFinished)):
        batch = batches.get(finished.batch)
        if batch is None:
            continue
        BATCH.labels(gate).observe(seconds_between(finished.started_ns, finished.finished_ns) or 0.0)
        BATCH_CHUNKS.labels(gate).observe(batch.last_seq - batch.first_seq + 1)
        for seq in range(batch.first_seq, batch.last_seq + 1):
            if seq in published:
                DISPATCH.labels(gate).observe(seconds_between(published[seq], finished.started_ns) or 0.0)
