"""The producer's generation, in this process, on the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from eager.common.clock import now_ns
from eager.common.connection import connect_async
from eager.common.protocol import Keys, SessionRequest
from eager.producer.generation import Generation, model_client

END_WITHIN_S = 10.0  # a watcher stops within one bounded read (1 s); this only bounds a hang


@pytest.mark.slow
def test_the_cancel_watcher_stops_even_when_redis_py_swallows_its_cancel(settings):
    """redis-py loses a CancelledError that lands while it opens a connection (redis/redis-py#2028);
    the watcher must stop anyway once the generation is settled. Each round uses a fresh client so
    the cancel can land in the connection's opening, after a varying number of loop turns."""
    keys = Keys(settings.namespace)
    request = SessionRequest(session_id=uuid.uuid4().hex, model="m", submitted_ns=now_ns(),
                             messages=[{"role": "user", "content": "go"}])

    async def round_(turns: int) -> None:
        client = connect_async(settings)
        generation = Generation(client, model_client(settings), keys, settings, request)
        watcher = asyncio.create_task(generation._await_cancel())
        for _ in range(turns):
            await asyncio.sleep(0)
        generation.settled.set()
        watcher.cancel()
        await asyncio.wait_for(asyncio.gather(watcher, return_exceptions=True), END_WITHIN_S)
        await client.aclose()

    async def scenario() -> None:
        for turns in range(6, 18):  # where the cancel lands in the opening on this machine
            await round_(turns)

    asyncio.run(scenario())
