"""Writing and reading protocol messages on Redis streams.

Every write sets the key's expiry in the same round trip, so no session key can
outlive its TTL even if every stage dies right after writing it.
"""

from __future__ import annotations

import redis
import redis.asyncio

from common.clock import now_ns
from common.protocol import Cancel, Keys, Message, Summary, decode, encode

Entry = tuple[str, Message]


def publish(client: redis.Redis, key: str, message: Message, ttl_s: int) -> str:
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, encode(message))
    pipe.expire(key, ttl_s)
    entry_id, _ = pipe.execute()
    return entry_id


def end_abandoned(client: redis.Redis, keys: Keys, session_id: str, summary: Summary, by: str, ttl_s: int) -> Summary:
    """End a session whose executor can no longer do so (it died): stop the model, then publish the terminal
    summary on the session's own stream, where every reader finds it."""
    publish(client, keys.cancel(session_id), Cancel(summary.detail or summary.status.value, by, now_ns()), ttl_s)
    publish(client, keys.events(session_id), summary, ttl_s)
    return summary


async def publish_async(client: redis.asyncio.Redis, key: str, messages: list[Message], ttl_s: int) -> None:
    """Several messages in one round trip: the detector often proves a few chunks at once."""
    pipe = client.pipeline(transaction=False)
    for message in messages:
        pipe.xadd(key, encode(message))
    pipe.expire(key, ttl_s)
    await pipe.execute()


def decode_entries(response: list | None) -> list[tuple[str, str, Message]]:
    """Flatten an XREAD reply into (key, entry id, message), in the order Redis returned them."""
    out: list[tuple[str, str, Message]] = []
    for key, entries in response or []:
        for entry_id, fields in entries:
            out.append((key, entry_id, decode(fields)))
    return out
