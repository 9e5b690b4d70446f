"""The detector's metrics: what detection costs per delta, and how late a chunk is published."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from eager.common.metrics import COUNT_BUCKETS, LATENCY_BUCKETS
from eager.common.protocol import ChunkReady, CodeStatus, DetectionEnd, Message

DELTA = Histogram("eager_detector_delta_seconds", "Detector core time for one delta (extraction, parse, rules)",
                  buckets=LATENCY_BUCKETS)
LAG = Histogram("eager_detector_lag_seconds",
                "From the arrival of the delta that proved a chunk final to the chunk being published",
                buckets=LATENCY_BUCKETS)
CHUNKS_PER_SESSION = Histogram("eager_detector_chunks_per_session", "Chunks emitted per session", buckets=COUNT_BUCKETS)
SESSIONS = Counter("eager_detector_sessions_total", "Sessions by how their code ended", ["status"])
for _status in CodeStatus:  # every series from the start, so rate() sees the first of each
    SESSIONS.labels(_status.value)


def observe_published(messages: list[Message], published_ns: int) -> None:
    for message in messages:
        if isinstance(message, ChunkReady):
            LAG.observe(max(0.0, (published_ns - message.delta_ns) / 1e9))
        elif isinstance(message, DetectionEnd):
            SESSIONS.labels(message.status.value).inc()
            CHUNKS_PER_SESSION.observe(message.chunks)
