"""Prometheus: the bucket boundaries every stage shares, and each process's /metrics endpoint.

Every stage process keeps its metrics in its own default registry and serves them itself
(no multiprocess mode: RQ's work horses record nothing, see executor_pool/metrics.py).
"""

from __future__ import annotations

import prometheus_client

from eager.common.config import Settings

# From 100 us (a dispatch) to 5 min (a session), fine enough between 1 and 30 s that a percentile
# of end-to-end or generation time is not off by a whole second: one set resolves both ends.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
COUNT_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


def serve_metrics(settings: Settings) -> int | None:
    """Serve /metrics when a port is configured; returns the port, None when off."""
    if not settings.metrics_port:
        return None
    prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    return settings.metrics_port


def seconds_between(start_ns: int | None, end_ns: int | None) -> float | None:
    if start_ns is None or end_ns is None:
        return None
    return max(0.0, (end_ns - start_ns) / 1e9)
