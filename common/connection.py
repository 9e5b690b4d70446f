"""Redis connections for every stage, sync (RQ, client) and asyncio (producer, detector)."""

from __future__ import annotations

import redis
import redis.asyncio

from eager.common.config import Settings
from eager.common.errors import EagerError

# Every blocking read (XREAD BLOCK) waits at most MAX_BLOCK_MS and loops: well under the
# socket timeout, so a live Redis never times a read out and a dead one is noticed.
SOCKET_TIMEOUT_S = 10.0
MAX_BLOCK_MS = 1000
# Anyone can write to a stream: bytes that are not UTF-8 must become a malformed message that is
# refused, never an exception inside a stage's read loop that kills the stage (and again on restart).
ENCODING_ERRORS = "replace"
ASYNC_MAX_CONNECTIONS = 5000  # per stage process (see connect_async)


class RedisUnavailable(EagerError, RuntimeError):
    """No Redis answers at the configured URL; the message says how to get one."""


def connect(settings: Settings, decode: bool = True) -> redis.Redis:
    """decode=False is for RQ, which stores pickled jobs."""
    return redis.Redis.from_url(settings.redis_url, decode_responses=decode, encoding_errors=ENCODING_ERRORS,
                                socket_timeout=SOCKET_TIMEOUT_S)


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    """One pool per stage process, shared by every session it carries: each holds a connection or two at once (a
    blocking read, a publish, a lease renewal), so redis-py's default of 100 would fail sessions past about 40
    with "Too many connections". Redis itself accepts 10000 clients by default."""
    return redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True, encoding_errors=ENCODING_ERRORS,
                                        socket_timeout=SOCKET_TIMEOUT_S, max_connections=ASYNC_MAX_CONNECTIONS)


def ping(settings: Settings, timeout_s: float = 1.0) -> bool:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()
