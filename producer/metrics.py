"""The producer's metrics: how fast the model answers, and what a cancel saves."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from eager.common.metrics import LATENCY_BUCKETS, RATE_BUCKETS, seconds_between
from eager.common.protocol import FinishReason, GenerationEnd

TIME_TO_FIRST_TOKEN = Histogram("eager_producer_time_to_first_token_seconds",
                                "From sending the request to the model to its first token", ["model"],
                                buckets=LATENCY_BUCKETS)
GENERATION = Histogram("eager_producer_generation_seconds", "From sending the request to the end of the stream",
                       ["model"], buckets=LATENCY_BUCKETS)
TOKENS_PER_SECOND = Histogram("eager_producer_tokens_per_second", "Tokens per second after the first token",
                              ["model"], buckets=RATE_BUCKETS)
TOKENS = Counter("eager_producer_tokens_total", "Tokens received from the model", ["model"])
GENERATIONS = Counter("eager_producer_generations_total", "Generations by how they ended", ["model", "finish_reason"])
CANCELS = Counter("eager_producer_cancels_total", "Generations stopped by a cancel, by who cancelled", ["by"])
BUDGET_SPARED = Counter("eager_producer_token_budget_spared_total",
                        "Of cancelled generations with a max_tokens, the budget left unspent: an upper bound on "
                        "the tokens a cancel spared (the true count is unknowable once the stream is closed)", ["model"])
CANCEL_LATENCY = Histogram("eager_producer_cancel_latency_seconds",
                           "From a cancel being published to the model's stream being closed", buckets=LATENCY_BUCKETS)


def declare(model: str) -> None:
    """Every series of the configured model from the start, so rate() sees the first of each (a request
    naming another model adds its own series as it comes)."""
    for by in ("executor", "client"):
        CANCELS.labels(by)
    for reason in FinishReason:
        GENERATIONS.labels(model, reason.value)
    for metric in (TIME_TO_FIRST_TOKEN, GENERATION, TOKENS_PER_SECOND, TOKENS, BUDGET_SPARED):
        metric.labels(model)


def observe_generation(model: str, started_ns: int, end: GenerationEnd, cancelled_by: str | None,
                       max_tokens: int | None) -> None:
    GENERATIONS.labels(model, end.finish_reason.value).inc()
    TOKENS.labels(model).inc(end.tokens)
    GENERATION.labels(model).observe(seconds_between(started_ns, end.at_ns) or 0.0)
    ttft = seconds_between(started_ns, end.first_token_ns)
    if ttft is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(ttft)
    streaming = seconds_between(end.first_token_ns, end.at_ns)
    if streaming and end.tokens > 1:
        TOKENS_PER_SECOND.labels(model).observe((end.tokens - 1) / streaming)
    if cancelled_by is not None:
        CANCELS.labels(cancelled_by).inc()
        if end.cancel_latency_s is not None:
            CANCEL_LATENCY.observe(end.cancel_latency_s)
        if max_tokens is not None:
            BUDGET_SPARED.labels(model).inc(max(0, max_tokens - end.tokens))
