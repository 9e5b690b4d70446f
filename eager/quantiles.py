"""Nearest-rank quantiles, the one definition the benchmark and load reports share: a reported
percentile is always a value some run really had, never an interpolation between two."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a fraction q of the values at or below it."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))  # the 1e-9: 0.9 * 10 is 9.000000000000002
    return ordered[rank - 1]
