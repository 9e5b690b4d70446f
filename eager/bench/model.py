"""The latency model: what serial and eager execution should cost, in closed form.

Pure arithmetic over plain numbers, so the benchmark can set every measured run beside
its own ideal and beside a prediction made before it ran.

A session is a sequence of units (a chunk, or a batch of chunks run together), unit i
ready at d_i (seconds from the request) and taking e_i to run, one at a time, in order,
on one interpreter. With zero overhead unit i finishes at

    f_i = max(f_{i-1}, d_i) + e_i,        f_0 = 0,

and the ideal end of the session is f_n (DESIGN.md, "ideal bound"). Serial execution
waits for the end of generation G and then runs everything: G + sum(e_i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Unit:
    """One piece of work the interpreter runs: ready at `ready_s` after the request, running for `exec_s`."""

    ready_s: float
    exec_s: float


class Regime(StrEnum):
    """Which side hides the other. Under GENERATION, execution keeps up with the model and eager's
    non-overlapped latency is about the last unit's; under EXECUTION the interpreter is still busy
    when the last unit arrives, so a backlog remains after generation however the gate batches."""

    GENERATION = "generation"
    EXECUTION = "execution"


def finish_times(units: Sequence[Unit]) -> list[float]:
    """f_i for every unit, in order."""
    finished, out = 0.0, []
    for unit in units:
        finished = max(finished, unit.ready_s) + unit.exec_s
        out.append(finished)
    return out


def ideal_end(units: Sequence[Unit]) -> float:
    """f_n: the earliest any executor could finish these units (0 when there are none)."""
    ends = finish_times(units)
    return ends[-1] if ends else 0.0


def regime(units: Sequence[Unit]) -> Regime:
    """EXECUTION when the last unit is ready before the interpreter is done with the ones before it."""
    if len(units) < 2:
        return Regime.GENERATION
    return Regime.EXECUTION if finish_times(units[:-1])[-1] > units[-1].ready_s else Regime.GENERATION


@dataclass(frozen=True)
class Prediction:
    generation_s: float
    serial_s: float
    eager_s: float
    regime: Regime

    @property
    def serial_non_overlapped_s(self) -> float:
        return self.serial_s - self.generation_s

    @property
    def eager_non_overlapped_s(self) -> float:
        return max(0.0, self.eager_s - self.generation_s)

    @property
    def reduction(self) -> float:
        """Fraction of serial's end-to-end latency that eager saves."""
        return 1.0 - self.eager_s / self.serial_s if self.serial_s else 0.0


def token_time(ttft_s: float, tokens_per_s: float, token: int) -> float:
    """When the `token`-th token (counted from 1) arrives from a model streaming at a steady rate."""
    if token < 1:
        raise ValueError(f"tokens are counted from 1, got {token}")
    return ttft_s + (token - 1) / tokens_per_s


def predict(ttft_s: float, tokens_per_s: float, proof_tokens: Sequence[int], total_tokens: int,
            exec_s: Sequence[float], overhead_s: float = 0.0) -> Prediction:
    """Serial and eager latency of one answer.

    `proof_tokens[i]` is how many tokens had arrived when unit i was proven final (the detector's
    readiness), `total_tokens` the length of the whole answer, `exec_s[i]` unit i's execution time,
    and `overhead_s` a fixed cost per session paid by both (starting the run, say).
    """
    if len(proof_tokens) != len(exec_s):
        raise ValueError(f"{len(proof_tokens)} proof points for {len(exec_s)} execution times")
    if total_tokens < 1 or any(not 1 <= k <= total_tokens for k in proof_tokens):
        raise ValueError("every proof point must lie within the answer's tokens")
    if list(proof_tokens) != sorted(proof_tokens):
        raise ValueError("units are proven in order")
    generation = token_time(ttft_s, tokens_per_s, total_tokens)
    units = [Unit(token_time(ttft_s, tokens_per_s, k), e) for k, e in zip(proof_tokens, exec_s, strict=True)]
    serial = generation + sum(exec_s) + overhead_s
    eager = ideal_end(units) + overhead_s
    return Prediction(generation, serial, eager, regime(units))
