"""Per-session leases: how a stage says "I am still working on this session".

A process working on a session keeps a key naming itself, set to expire after `lease_s`
and renewed three times per period. If the process dies (kill -9, a lost host), the key
expires within one period, and whoever waits on that stage ends the session instead of
waiting for the session deadline: the detector ends a session whose producer is gone,
the client one whose executor is gone. RQ alone would notice a dead worker only at its
next maintenance run, ten minutes later by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import redis
import redis.asyncio

RENEWALS_PER_PERIOD = 3

# Renew only one's own lease, or one that is gone (Redis restarted, or it lapsed and nobody took it): never
# overwrite a lease another process took over. Release only one's own.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _milliseconds(lease_s: float) -> int:
    return max(1, int(lease_s * 1000))


def renew(client: redis.Redis, key: str, owner: str, lease_s: float) -> bool:
    """Take or extend the lease unless another owner holds it; whether this owner holds it now."""
    return bool(client.eval(_RENEW, 1, key, owner, _milliseconds(lease_s)))


def release(client: redis.Redis, key: str, owner: str) -> bool:
    """Give the lease up if this owner still holds it; whether it did."""
    return bool(client.eval(_RELEASE, 1, key, owner))


@contextlib.contextmanager
def held(client: redis.Redis, key: str, owner: str, lease_s: float) -> Iterator[None]:
    """Hold the lease from a daemon thread for the duration of the block (sync callers: the executor)."""
    stop = threading.Event()
    renew(client, key, owner, lease_s)

    def keep() -> None:
        while not stop.wait(lease_s / RENEWALS_PER_PERIOD):
            with contextlib.suppress(redis.RedisError):  # Redis away: the lease lapses, which is the truth
                renew(client, key, owner, lease_s)

    thread = threading.Thread(target=keep, name="lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(redis.RedisError):
            release(client, key, owner)


@contextlib.asynccontextmanager
async def held_async(client: redis.asyncio.Redis, key: str, owner: str, lease_s: float) -> AsyncIterator[None]:
    """Hold the lease from a task for the duration of the block (asyncio callers: the producer)."""
    await client.eval(_RENEW, 1, key, owner, _milliseconds(lease_s))
    released = asyncio.Event()

    async def keep() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(released.wait(), lease_s / RENEWALS_PER_PERIOD)
            if not released.is_set():
                with contextlib.suppress(redis.RedisError):
                    await client.eval(_RENEW, 1, key, owner, _milliseconds(lease_s))

    renewal = asyncio.create_task(keep())
    try:
        yield
    finally:
        released.set()  # not a cancel: redis-py can swallow one (see producer.generation)
        await renewal
        with contextlib.suppress(redis.RedisError):
            await client.eval(_RELEASE, 1, key, owner)


# No process took an upstream's session after this many lease periods: none will (a takeover needs about one).
UPSTREAM_GRACE_LEASES = 3


@dataclass
class Cadence:
    """When to look again at something a lease keeps: a few times per period, not on every loop turn."""

    every_ns: int
    _looked_ns: int | None = None

    @classmethod
    def of_lease(cls, lease_s: float) -> Cadence:
        return cls(int(lease_s / RENEWALS_PER_PERIOD * 1e9))

    def due(self, now_ns: int) -> bool:
        """Whether it is time to look (and, if so, that the caller looks now)."""
        if self._looked_ns is not None and now_ns - self._looked_ns < self.every_ns:
            return False
        self._looked_ns = now_ns
        return True


@dataclass
class Watch:
    """Whether an upstream's lease is lost: nobody took it within `grace_s` of `since_ns`, or it was held and
    has stayed missing for `takeover_s` (0: a lapse is final; a stage whose sessions a successor takes over,
    as detectors do, gets a few periods).

    Pure bookkeeping over what the caller observed (`held` or not, at a time), so the rule is testable;
    `lapsed` is its one use against Redis.
    """

    since_ns: int
    grace_s: float  # inf: only a lapse counts (a queued session is not a lost one)
    takeover_s: float = 0.0
    cadence: Cadence = field(default_factory=lambda: Cadence(0))
    seen: bool = False
    _held_ns: int | None = None  # the last time it was seen held
    _excused_until_ns: int = 0

    @classmethod
    def upstream(cls, since_ns: int, lease_s: float, taken_over: bool = False) -> Watch:
        """The watch a stage keeps on the stage before it, looked at a few times per period."""
        return cls(since_ns, UPSTREAM_GRACE_LEASES * lease_s, UPSTREAM_GRACE_LEASES * lease_s if taken_over else 0.0,
                   Cadence.of_lease(lease_s))

    def confirm(self, now_ns: int) -> None:
        """The holder showed itself another way (its output arrived): from now on only a lapse counts."""
        self.seen, self._held_ns = True, now_ns

    def excuse(self, until_ns: int) -> None:
        """A missing lease does not count before `until_ns`: the watcher's Redis was away, and may be back without
        the lease (a restart without persistence loses every key), which a living holder renews within that time."""
        self._excused_until_ns = max(self._excused_until_ns, until_ns)

    def lost(self, held_now: bool, now_ns: int) -> bool:
        if held_now:
            self.confirm(now_ns)
            return False
        if now_ns < self._excused_until_ns:
            return False
        if self.seen:
            return self._held_ns is None or now_ns - self._held_ns >= self.takeover_s * 1e9
        return not math.isinf(self.grace_s) and now_ns - self.since_ns > self.grace_s * 1e9


def lapsed(client: redis.Redis, key: str, watch: Watch, now_ns: int) -> bool:
    """Whether the lease at `key` is lost, looking at it only when the watch's cadence says so."""
    return watch.cadence.due(now_ns) and watch.lost(bool(client.exists(key)), now_ns)


async def lapsed_async(client: redis.asyncio.Redis, key: str, watch: Watch, now_ns: int) -> bool:
    """`lapsed`, for asyncio callers (the detector)."""
    return watch.cadence.due(now_ns) and watch.lost(bool(await client.exists(key)), now_ns)
