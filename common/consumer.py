"""The loop shared by the producer and the detector: take sessions from the request stream.

Both stages read every request, each through its own consumer group, so several
producers (or detectors) split the sessions between them and each session is taken
by exactly one of each. A request is acknowledged when its session is done with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect, connect_async
from eager.common.heartbeat import process_name, start_beating
from eager.common.lease import Cadence, held_async
from eager.common.protocol import Keys, ProtocolError, SessionRequest, decode, recover_session_id

log = logging.getLogger(__name__)

MAX_DELIVERIES = 3
REDIS_RETRY_S = 0.5

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
    stop: asyncio.Event | None = None, resume: bool = False,
) -> None:
    """Run `handle` for every session request, holding this stage's lease on the session meanwhile;
    `reject(session_id, why)` for unreadable ones.

    With `resume` (a stage whose `handle` can pick a session up where a dead process left it),
    sessions another consumer took and stopped holding the stage's lease on are claimed and
    handled again here; one delivered MAX_DELIVERIES times is rejected rather than retried forever.
    """
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
            async with held_async(client, keys.lease(request.session_id, stage), consumer, settings.lease_s):
                await handle(request)
        except ProtocolError as exc:
            session_id = recover_session_id(fields)
            log.warning("rejected request %s (session %s): %s", entry_id, session_id, exc)
            if session_id is not None:
                await reject(session_id, f"malformed request: {exc}")
        except Exception:
            log.exception("%s failed on request %s", stage, entry_id)
        finally:
            with contextlib.suppress(redis.RedisError):  # Redis away: the entry is pending, a successor may claim it
                await client.xack(keys.requests, group, entry_id)

    def start(entry_id: str, fields: dict[str, str]) -> None:
        task = asyncio.create_task(take(entry_id, fields))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def claim_abandoned() -> None:
        lease_ms = int(settings.lease_s * 1000)
        for pending in await client.xpending_range(keys.requests, group, "-", "+", 100, idle=lease_ms):
            if pending["consumer"] == consumer:
                continue
            entry_id = pending["message_id"]
            entries = await client.xrange(keys.requests, entry_id, entry_id)
            session_id = recover_session_id(entries[0][1]) if entries else None
            if session_id is not None and await client.exists(keys.lease(session_id, stage)):
                continue  # slow, not dead
            claimed = await client.xclaim(keys.requests, group, consumer, lease_ms, [entry_id])
            if not claimed:
                continue  # another consumer was faster
            log.warning("%s takes over session %s from %s", stage, session_id, pending["consumer"])
            if pending["times_delivered"] >= MAX_DELIVERIES:
                await client.xack(keys.requests, group, entry_id)
                if session_id is not None:
                    await reject(session_id, f"{stage} lost the session {MAX_DELIVERIES} times")
                continue
            start(*claimed[0])

    claims = Cadence.of_lease(settings.lease_s)
    try:
        while not stop.is_set():
            try:
                response = await client.xreadgroup(group, consumer, {keys.requests: ">"}, count=16, block=500)
            except redis.RedisError as exc:  # Redis away or restarted (without its data: the group is gone too)
                log.warning("%s lost Redis (%s: %s); retrying", stage, type(exc).__name__, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), REDIS_RETRY_S)
                with contextlib.suppress(redis.RedisError):
                    await ensure_group(client, keys.requests, group)
                continue
            for _, entries in response or []:
                for entry_id, fields in entries:
                    start(entry_id, fields)
            if resume and claims.due(now_ns()):
                try:
                    await claim_abandoned()
                except redis.RedisError:
                    log.exception("%s could not look for abandoned sessions", stage)
    finally:
        stop_beating.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
