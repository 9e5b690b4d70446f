"""Timestamps that every stage can compare.

Stages run as separate processes (possibly on several hosts), so a monotonic clock
would not compare across them; all stamps are wall-clock nanoseconds since the epoch,
which on one host share a clock and across hosts need NTP, as any tracing system does.
"""

import time


def now_ns() -> int:
    return time.time_ns()


def seconds_between(start_ns: int, end_ns: int) -> float:
    return (end_ns - start_ns) / 1e9
