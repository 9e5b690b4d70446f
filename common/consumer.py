"""The loop shared by the producer and the detector: take sessions from the request stream.

Both stages read every request, each through its own consumer group, so several
producers (or detectors) split the sessions between them and each session is taken
by exactly one of each. A request is acknowledged when its session is done with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

from common.config import Settings
from common.connection import connect, connect_async
from common.heartbeat import process_name, start_beating
from common.protocol import Keys, ProtocolError, SessionRequest, decode, recover_session_id

log = logging.getLogger(__name__)

Handler = Callable[[SessionRequest], Awaitable[None]]
RejectHandler = Callable[[str, str], Awaitable[None]]


async def ensure_group(client: redis.asyncio.Redis, stream: str, group: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def serve_requests(
    settings: Settings, stage: str, group: str, handle: Handler, reject: RejectHandler,
    stop: asyncio.Event | None = None,
) -> None:
    """Run `handle` for every session request; `reject(session_id, why)` for unreadable ones."""
    keys = Keys(settings.namespace)
    client = connect_async(settings)
    consumer = process_name()
    await ensure_group(client, keys.requests, group)
    stop_beating = start_beating(connect(settings), keys, stage, consumer)
    tasks: set[asyncio.Task] = set()
    stop = stop or asyncio.Event()

    async def take(entry_id: str, fields: dict[str, str]) -> None:
        try:
            request = decode(fields)
            if not isinstance(request, SessionRequest):
                raise ProtocolError(f"a {request.kind} message on the request stream")
            await handle(request)
        except ProtocolError as exc:
            session_id = recover_session_id(fields)
            log.warning("rejected request %s (session %s): %s", entry_id, session_id, exc)
            if session_id is not None:
                await reject(session_id, f"malformed request: {exc}")
        except Exception:
            log.exception("%s failed on request %s", stage, entry_id)
        finally:
            await client.xack(keys.requests, group, entry_id)

    try:
        while not stop.is_set():
            response = await client.xreadgroup(group, consumer, {keys.requests: ">"}, count=16, block=500)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    task = asyncio.create_task(take(entry_id, fields))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
    finally:
        stop_beating.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
