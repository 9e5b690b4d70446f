"""One benchmark run, read from the events its session published (pure: messages in, a record out).

Every stage stamps what it publishes, so the record needs no clock of its own: chunk
readiness (the arrival of the delta that proved it), detection, each batch's start and
end in the interpreter, and the generation's end.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    DetectionEnd,
    Gate,
    GateAction,
    GateDecision,
    Message,
    Summary,
)
from eager.bench.model import Regime, Unit, ideal_end, predict


@dataclass(frozen=True)
class Batch:
    """One batch, in seconds from the request."""

    first_seq: int
    last_seq: int
    ready_s: float  # the delta that proved its last chunk arrived
    runnable_s: float  # the pipeline could start it: detected, the gate satisfied, the interpreter free
    started_s: float
    finished_s: float
    proof_token: int  # tokens received when its last chunk was proven

    @property
    def exec_s(self) -> float:
        return self.finished_s - self.started_s


@dataclass(frozen=True)
class Run:
    task: str
    suite: str
    profile: str
    gate: str
    status: str
    e2e_s: float
    ttft_s: float | None
    generation_s: float | None
    non_overlapped_s: float | None
    exec_s: float
    ideal_s: float
    predicted_s: float
    regime: str
    detection_lag_s: float  # mean, per chunk: proving delta -> chunk published
    dispatch_s: float  # mean, per batch: runnable -> running
    batching_s: float  # mean, per batch: first chunk runnable -> batch runnable (what the gate waited to group)
    chunks: int
    stdout: str
    batches: tuple[Batch, ...]

    @property
    def gap_s(self) -> float:
        """How far the measured end is from the ideal bound of the same batches."""
        return self.e2e_s - self.ideal_s


def proof_tokens(tokens: Sequence[str], characters: Sequence[int]) -> list[int]:
    """How many of `tokens` had arrived once `characters[i]` characters of the answer had."""
    ends = list(itertools.accumulate(len(token) for token in tokens))
    return [min(len(ends), bisect.bisect_left(ends, count) + 1) for count in characters]


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def record(task: str, suite: str, profile: str, ttft_s: float, tokens_per_s: float, tokens: Sequence[str],
           events: Sequence[Message]) -> Run:
    """The run of one session; `tokens` are the pieces the replay model streamed, in order."""
    summary = next(e for e in reversed(events) if isinstance(e, Summary))
    t0 = summary.submitted_ns

    def seconds(ns: int) -> float:
        return (ns - t0) / 1e9

    chunks = {e.seq: e for e in events if isinstance(e, ChunkReady)}
    detection_end = next((e for e in events if isinstance(e, DetectionEnd)), None)
    held = [e.seq for e in events if isinstance(e, GateDecision) and e.action is GateAction.HOLD]
    started = {e.batch: e for e in events if isinstance(e, BatchStarted)}
    batches: list[Batch] = []
    batching: list[float] = []
    previous_end = 0.0
    for finished in (e for e in events if isinstance(e, BatchFinished)):
        batch = started[finished.batch]
        last = chunks[batch.last_seq]
        waits_for_end = summary.gate is Gate.SERIAL or any(seq <= batch.last_seq for seq in held)
        program_end = seconds(detection_end.detected_ns) if waits_for_end and detection_end else 0.0
        runnable = max(seconds(last.detected_ns), previous_end, program_end)
        first_runnable = max(seconds(chunks[batch.first_seq].detected_ns), previous_end, program_end)
        batching.append(runnable - first_runnable)
        (proof,) = proof_tokens(tokens, [last.emitted_at])
        batches.append(Batch(batch.first_seq, batch.last_seq, seconds(last.delta_ns), runnable,
                             seconds(finished.started_ns), seconds(finished.finished_ns), proof))
        previous_end = seconds(finished.finished_ns)

    units = [Unit(b.ready_s, b.exec_s) for b in batches]
    exec_s = sum(b.exec_s for b in batches)
    if batches:
        prediction = predict(ttft_s, tokens_per_s, [b.proof_token for b in batches], len(tokens),
                             [b.exec_s for b in batches])
        predicted = prediction.serial_s if summary.gate is Gate.SERIAL else prediction.eager_s
        regime = prediction.regime
    else:
        predicted, regime = 0.0, Regime.GENERATION
    return Run(
        task=task, suite=suite, profile=profile, gate=summary.gate.value, status=summary.status.value,
        e2e_s=summary.e2e_s, ttft_s=summary.ttft_s, generation_s=summary.generation_s,
        non_overlapped_s=summary.non_overlapped_s, exec_s=exec_s,
        ideal_s=_serial_ideal(batches, summary) if summary.gate is Gate.SERIAL else ideal_end(units),
        predicted_s=predicted, regime=regime.value,
        detection_lag_s=_mean([(c.detected_ns - c.delta_ns) / 1e9 for c in chunks.values()]),
        dispatch_s=_mean([b.started_s - b.runnable_s for b in batches]),
        batching_s=_mean(batching), chunks=len(chunks), stdout=summary.stdout, batches=tuple(batches),
    )


def _serial_ideal(batches: list[Batch], summary: Summary) -> float:
    """Serial's own bound: nothing can start before generation ends, then everything runs back to back."""
    generation = summary.generation_s or 0.0
    return generation + sum(b.exec_s for b in batches)
