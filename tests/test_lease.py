"""When a lease counts as lost (pure), and that a held lease is renewed and released (real Redis)."""

from __future__ import annotations

import asyncio
import threading
import time

from eager.common.connection import connect, connect_async
from eager.common.lease import UPSTREAM_GRACE_LEASES, Cadence, Watch, held, held_async, lapsed

S = 1_000_000_000


def test_a_lease_held_then_gone_is_lost_at_once() -> None:
    watch = Watch(since_ns=0, grace_s=100)
    assert not watch.lost(True, 1 * S)
    assert watch.lost(False, 2 * S)


def test_a_lease_never_taken_is_lost_only_after_the_grace() -> None:
    watch = Watch(since_ns=10 * S, grace_s=3)
    assert not watch.lost(False, 12 * S)
    assert not watch.lost(False, 13 * S)
    assert watch.lost(False, 13 * S + 1)
    assert not watch.seen


def test_a_confirmed_holder_is_lost_as_soon_as_its_lease_is_missing() -> None:
    watch = Watch(since_ns=0, grace_s=100)
    watch.confirm(0)
    assert watch.lost(False, 1 * S)


def test_without_a_grace_only_a_lapse_counts() -> None:
    watch = Watch(since_ns=0, grace_s=float("inf"))
    assert not watch.lost(False, 10_000 * S)
    assert not watch.lost(True, 10_001 * S)
    assert watch.lost(False, 10_002 * S)


def test_a_lease_a_successor_takes_over_may_lapse_for_the_takeover_time() -> None:
    watch = Watch(since_ns=0, grace_s=100, takeover_s=3)
    assert not watch.lost(True, 1 * S)
    assert not watch.lost(False, 2 * S)
    assert not watch.lost(False, 4 * S - 1)
    assert watch.lost(False, 4 * S)  # three seconds since it was last seen held
    assert not watch.lost(True, 5 * S)  # taken over: watched afresh
    assert not watch.lost(False, 7 * S)


def test_an_upstream_watch_uses_the_one_grace_and_looks_a_few_times_per_period() -> None:
    producer = Watch.upstream(since_ns=0, lease_s=2.0)
    detector = Watch.upstream(since_ns=0, lease_s=2.0, taken_over=True)
    assert producer.grace_s == detector.grace_s == detector.takeover_s == UPSTREAM_GRACE_LEASES * 2.0
    assert producer.takeover_s == 0.0
    looks = [now for now in range(0, 2 * S, S // 10) if producer.cadence.due(now)]
    assert len(looks) == 3  # 0, 0.7 and 1.4 s: three per period of 2 s


def test_a_cadence_is_due_at_once_then_once_per_interval() -> None:
    cadence = Cadence(every_ns=10)
    assert [cadence.due(now) for now in (0, 5, 9, 10, 15, 21)] == [True, False, False, True, False, True]


def test_lapsed_looks_at_the_lease_in_redis_only_when_due(settings) -> None:
    client = connect(settings)
    key = f"{settings.namespace}:lease-watched"
    watch = Watch(since_ns=0, grace_s=100, cadence=Cadence(every_ns=10 * S))
    client.set(key, "upstream")
    assert not lapsed(client, key, watch, 1 * S) and watch.seen
    client.delete(key)
    assert not lapsed(client, key, watch, 2 * S)  # not due: Redis is not asked
    assert lapsed(client, key, watch, 11 * S)
    client.close()


def test_a_held_lease_outlives_its_period_and_is_released(settings) -> None:
    client = connect(settings)
    key = f"{settings.namespace}:lease-test"
    with held(client, key, "me", lease_s=0.3):
        deadline = time.monotonic() + 0.9  # three periods: renewal, not the first SET, keeps it
        while time.monotonic() < deadline:
            assert client.get(key) == "me"
            threading.Event().wait(0.05)
        assert 0 < client.pttl(key) <= 300
    assert client.exists(key) == 0
    client.close()


def test_an_async_held_lease_outlives_its_period_and_is_released(settings) -> None:
    key = f"{settings.namespace}:lease-test"

    async def scenario() -> None:
        client = connect_async(settings)
        async with held_async(client, key, "me", lease_s=0.3):
            for _ in range(18):  # 0.9 s
                assert await client.get(key) == "me"
                await asyncio.sleep(0.05)
        assert await client.exists(key) == 0
        await client.aclose()

    asyncio.run(scenario())
