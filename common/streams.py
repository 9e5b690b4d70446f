"""Writing and reading protocol messages on Redis streams.

Every write sets the key's expiry in the same round trip, so no session key can
outlive its TTL even if every stage dies right after writing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio

from eager.common.clock import now_ns
from eager.common.protocol import Cancel, Keys, Message, Summary, decode, encode

Entry = tuple[str, Message]


def publish(client: redis.Redis, key: str, message: Message, ttl_s: int) -> str:
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, encode(message))
    pipe.expire(key, ttl_s)
    entry_id, _ = pipe.execute()
    return entry_id


# A session's end is one atomic step, whoever takes it (the executor, the worker that saw its horse die, a client
# that saw the executor's lease lapse): the first to run this publishes the Summary and records its entry id; every
# later one publishes nothing and learns which entry ended the session.
_END = """
local ended = redis.call('GET', KEYS[1])
if ended then return {0, ended} end
local entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], entry, 'EX', ARGV[1])
return {1, entry}
"""


@dataclass(frozen=True, slots=True)
class Ended:
    """The session's one Summary, and whether this caller's was the one published."""

    summary: Summary
    won: bool


def _end_arguments(keys: Keys, session_id: str, summary: Summary, ttl_s: int) -> tuple[str | int, ...]:
    fields = encode(summary)
    return (_END, 2, keys.end(session_id), keys.events(session_id), ttl_s,
            *(item for pair in fields.items() for item in pair))


def _standing(summary: Summary, standing: list) -> Ended:
    """A loser's answer: the Summary at the entry that ended the session."""
    message = decode(standing[0][1]) if standing else None
    if not isinstance(message, Summary):  # the stream expired under its end key: nothing better is known
        return Ended(summary, False)
    return Ended(message, False)


def end_session(client: redis.Redis, keys: Keys, session_id: str, summary: Summary, ttl_s: int) -> Ended:
    """Publish `summary` as the session's terminal event unless another writer already ended it; then the
    Summary that stands is read back, so a loser reports the real end, never its own guess."""
    won, entry_id = client.eval(*_end_arguments(keys, session_id, summary, ttl_s))
    if won:
        return Ended(summary, True)
    return _standing(summary, client.xrange(keys.events(session_id), entry_id, entry_id))


def end_abandoned(client: redis.Redis, keys: Keys, session_id: str, summary: Summary, by: str, ttl_s: int) -> Summary:
    """End a session whose executor can no longer do so (it died, or its lease lapsed): publish the terminal
    summary where every reader finds it and, if this ended it, stop the model."""
    ended = end_session(client, keys, session_id, summary, ttl_s)
    if ended.won:
        publish(client, keys.cancel(session_id), Cancel(summary.detail or summary.status.value, by, now_ns()), ttl_s)
    return ended.summary


async def end_abandoned_async(client: redis.asyncio.Redis, keys: Keys, session_id: str, summary: Summary, by: str,
                              ttl_s: int) -> Summary:
    """`end_abandoned` for asyncio callers (the asyncio client)."""
    won, entry_id = await client.eval(*_end_arguments(keys, session_id, summary, ttl_s))
    if not won:
        return _standing(summary, await client.xrange(keys.events(session_id), entry_id, entry_id)).summary
    await publish_async(client, keys.cancel(session_id), [Cancel(summary.detail or summary.status.value, by, now_ns())],
                        ttl_s)
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
