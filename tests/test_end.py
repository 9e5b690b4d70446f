"""A session ends once: whoever races to end it (real Redis), one Summary is published and every writer learns it."""

from __future__ import annotations

import threading

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect
from eager.common.lease import release, renew
from eager.common.protocol import Cancel, Gate, Keys, SessionStatus, Summary, decode
from eager.common.streams import end_abandoned, end_session


def _summary(status: SessionStatus, detail: str) -> Summary:
    return Summary(status=status, gate=Gate.EAGER, submitted_ns=now_ns(), finished_ns=now_ns(), stdout="",
                   detail=detail)


def _stored(client, key: str) -> list:  # type: ignore[no-untyped-def]
    return [decode(fields) for _, fields in client.xrange(key)]


def test_the_first_end_stands_and_a_later_one_learns_it(settings: Settings) -> None:
    client, keys = connect(settings), Keys(settings.namespace)
    first = end_session(client, keys, "s1", _summary(SessionStatus.OK, "the executor's"), 60)
    second = end_session(client, keys, "s1", _summary(SessionStatus.FAILED, "the client's"), 60)
    assert first.won and not second.won
    assert second.summary == first.summary
    assert [m.detail for m in _stored(client, keys.events("s1"))] == ["the executor's"]
    assert 0 < client.ttl(keys.end("s1")) <= 60


def test_racing_enders_publish_exactly_one_summary(settings: Settings) -> None:
    keys = Keys(settings.namespace)
    clients = [connect(settings) for _ in range(8)]
    start = threading.Barrier(len(clients))
    results = [None] * len(clients)

    def end(number: int) -> None:
        start.wait()
        results[number] = end_session(clients[number], keys, "s2", _summary(SessionStatus.FAILED, f"writer {number}"),
                                      60)

    threads = [threading.Thread(target=end, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [m for m in _stored(clients[0], keys.events("s2")) if isinstance(m, Summary)]
    assert len(stored) == 1
    assert sum(result.won for result in results) == 1
    assert {result.summary.detail for result in results} == {stored[0].detail}


def test_only_the_writer_that_ends_an_abandoned_session_stops_the_model(settings: Settings) -> None:
    client, keys = connect(settings), Keys(settings.namespace)
    end_session(client, keys, "s3", _summary(SessionStatus.OK, "ended by its executor"), 60)
    standing = end_abandoned(client, keys, "s3", _summary(SessionStatus.FAILED, "lease lapsed"), "client", 60)
    assert standing.status is SessionStatus.OK
    assert client.xlen(keys.cancel("s3")) == 0
    end_abandoned(client, keys, "s4", _summary(SessionStatus.FAILED, "lease lapsed"), "client", 60)
    (cancel,) = _stored(client, keys.cancel("s4"))
    assert isinstance(cancel, Cancel) and cancel.by == "client"


def test_a_lease_is_renewed_and_released_only_by_its_owner(settings: Settings) -> None:
    client, key = connect(settings), Keys(settings.namespace).lease("s5", "executor")
    assert renew(client, key, "executor-a", 5.0)
    assert not renew(client, key, "executor-b", 5.0)  # a takeover is not overwritten
    assert client.get(key) == "executor-a"
    assert not release(client, key, "executor-b")
    assert client.get(key) == "executor-a"
    assert release(client, key, "executor-a")
    assert client.get(key) is None
    assert renew(client, key, "executor-b", 5.0)  # a lapsed lease is free to take again
