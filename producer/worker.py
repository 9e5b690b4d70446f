"""The producer process: one asyncio task per session, many sessions per process."""

from __future__ import annotations

import asyncio

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect_async
from eager.common.consumer import serve_requests
from eager.common.metrics import serve_metrics
from eager.common.protocol import PRODUCER_GROUP, FinishReason, GenerationEnd, Keys, SessionRequest
from eager.common.streams import publish_async
from eager.producer import metrics
from eager.producer.generation import Generation, model_client


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    keys = Keys(settings.namespace)
    client = connect_async(settings)
    model = model_client(settings)

    async def handle(request: SessionRequest) -> None:
        await Generation(client, model, keys, settings, request).run()

    async def reject(session_id: str, why: str) -> None:
        end = GenerationEnd(finish_reason=FinishReason.ERROR, at_ns=now_ns(), tokens=0, error=why)
        await publish_async(client, keys.tokens(session_id), [end], settings.key_ttl_s)

    try:
        await serve_requests(settings, "producer", PRODUCER_GROUP, handle, reject, stop)
    finally:
        await model.close()
        await client.aclose()


def serve(settings: Settings) -> None:
    metrics.declare(settings.model)
    serve_metrics(settings)
    asyncio.run(run(settings))
