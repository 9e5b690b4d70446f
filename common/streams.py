"""Writing and reading protocol messages on Redis streams.

Every write sets the key's expiry in the same round trip, so no session key can
outlive its TTL even if every stage dies right after writing it.
"""

from __future__ import annotations

import redis
import redis.asyncio

from common.protocol import Message, decode, encode

Entry = tuple[str, Message]


def publish(client: redis.Redis, key: str, message: Message, ttl_s: int) -> str:
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, encode(message))
    pipe.expire(key, ttl_s)
    entry_id, _ = pipe.execute()
    return entry_id


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
