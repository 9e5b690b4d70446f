"""The reading core: what a client reads next, what it gives, and when and how it ends a session itself.

No Redis here: the reader is fed what a shell would have observed (decoded entries, a lease's presence, a
failure) at chosen times, so every rule (order, the horizon of a full read, the Summary last and always,
lease lapse, deadline, Redis away) is checked at its edges.
"""

from __future__ import annotations

import math

import pytest

from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS
from eager.common.protocol import (
    Delta,
    FinishReason,
    Gate,
    GenerationEnd,
    Keys,
    Message,
    SessionRequest,
    SessionStatus,
    Summary,
)
from eager.reading import (
    READ_COUNT,
    REDIS_GIVE_UP_LEASES,
    REDIS_RETRY_S,
    TERMINAL_GRACE_S,
    Abandon,
    CheckLease,
    Done,
    Entry,
    Pause,
    Read,
    SessionReader,
    in_publication_order,
)

STREAMS = ["tokens", "chunks", "events"]
SUMMARY = Summary(SessionStatus.OK, Gate.EAGER, 1, 2, "")
KEYS = Keys("test-reading")
SETTINGS = Settings(namespace="test-reading", lease_s=3.0)
T0 = 1_000_000_000_000_000_000  # the request's submission, in ns
S = 1_000_000_000  # one second in ns
TIMEOUT_S = 10.0
DEADLINE = T0 + int((TIMEOUT_S + TERMINAL_GRACE_S) * S)
CHECK_EVERY = int(SETTINGS.lease_s / 3 * S)
TOKENS, CHUNKS, EVENTS = KEYS.tokens("s"), KEYS.chunks("s"), KEYS.events("s")
LEASE = KEYS.lease("s", "executor")


def reader(tokens: bool = True, executor_grace_s: float = math.inf, now: int = T0) -> SessionReader:
    request = SessionRequest(session_id="s", model="m", submitted_ns=T0, messages=[{"role": "user", "content": "x"}],
                             timeout_s=TIMEOUT_S)
    return SessionReader(request, KEYS, SETTINGS, tokens=tokens, now_ns=now, executor_grace_s=executor_grace_s,
                         turn=2)


def delta(n: int) -> Delta:
    return Delta(f"t{n}", n)


def summary(detail: str = "the executor's") -> Summary:
    return Summary(SessionStatus.OK, Gate.EAGER, T0, T0 + S, "out", detail=detail)


def reading(session: SessionReader, now: int) -> Read:
    """The next step, which must be a Read (the lease checked first if it is due, and found held)."""
    step = session.next_step(now)
    if isinstance(step, CheckLease):
        session.lease_observed(True, now)
        step = session.next_step(now)
    assert isinstance(step, Read), step
    return step


def abandoned_as_lost(session: SessionReader, now: int) -> Summary:
    """The lease is looked at and found missing, and that counts: what is there is drained, then the session
    abandoned as failed; its Summary."""
    assert isinstance(session.next_step(now), CheckLease)
    session.lease_observed(False, now)
    assert session.next_step(now).block_ms is None  # type: ignore[union-attr]
    session.received([], now)
    abandon = session.next_step(now)
    assert isinstance(abandon, Abandon) and abandon.summary.status is SessionStatus.FAILED
    return abandon.summary


# in_publication_order


def test_entries_are_merged_by_publication_time_with_cause_before_effect_in_a_tie():
    merged = in_publication_order([
        ("events", "100-0", SUMMARY),  # Redis lists the events stream first here
        ("tokens", "98-0", Delta("a", 1)), ("tokens", "100-0", Delta("b", 2)),
        ("tokens", "100-1", GenerationEnd(FinishReason.STOP, 3, 2)),
    ], STREAMS, count=512)
    assert [(key, entry_id) for key, entry_id, _ in merged] == [
        ("tokens", "98-0"), ("tokens", "100-0"), ("tokens", "100-1"), ("events", "100-0")]


def test_sequence_numbers_order_entries_within_a_stream_as_numbers_not_text():
    merged = in_publication_order([("tokens", "5-10", delta(2)), ("tokens", "5-9", delta(1))], STREAMS, count=512)
    assert [entry_id for _, entry_id, _ in merged] == ["5-9", "5-10"]


def test_nothing_later_than_a_full_stream_s_last_entry_is_returned_yet():
    merged = in_publication_order([
        ("tokens", "10-0", Delta("a", 1)), ("tokens", "11-0", Delta("b", 2)),  # full at count=2: "12-0" may follow
        ("events", "12-5", SUMMARY),
    ], STREAMS, count=2)
    assert [entry_id for _, entry_id, _ in merged] == ["10-0", "11-0"]


def test_of_two_full_streams_the_earlier_last_entry_is_the_horizon():
    merged = in_publication_order([
        ("tokens", "10-0", delta(1)), ("tokens", "30-0", delta(2)),
        ("chunks", "15-0", delta(3)), ("chunks", "20-0", delta(4)),
        ("events", "19-0", delta(5)),
    ], STREAMS, count=2)
    assert [entry_id for _, entry_id, _ in merged] == ["10-0", "15-0", "19-0", "20-0"]


def test_an_empty_reply_is_empty():
    assert in_publication_order([], STREAMS, count=2) == []


# reading a session


def test_the_lease_is_checked_first_then_every_stream_is_read_from_its_start_blocking_within_a_lease_check():
    session = reader()
    assert session.next_step(T0) == CheckLease(LEASE)
    session.lease_observed(False, T0)  # queued: not taken yet, which is not lost
    step = session.next_step(T0)
    assert step == Read({TOKENS: "0-0", CHUNKS: "0-0", EVENTS: "0-0"}, READ_COUNT, CHECK_EVERY // 1_000_000)
    assert step.block_ms is not None and step.block_ms <= MAX_BLOCK_MS


def test_without_tokens_the_token_stream_is_not_read():
    assert set(reading(reader(tokens=False), T0).cursors) == {CHUNKS, EVENTS}


def test_messages_are_given_in_publication_order_and_each_stream_s_cursor_moves_to_its_last_entry():
    session = reader()
    reading(session, T0)
    given = session.received([(EVENTS, "7-0", delta(3)), (TOKENS, "5-0", delta(1)), (TOKENS, "6-0", delta(2))], T0)
    assert given == [delta(1), delta(2), delta(3)]
    assert reading(session, T0).cursors == {TOKENS: "6-0", CHUNKS: "0-0", EVENTS: "7-0"}


def test_a_full_read_gives_nothing_past_its_horizon_and_the_next_read_resumes_at_it():
    session = reader()
    reading(session, T0)
    full: list[Entry] = [(TOKENS, f"{10 + n}-0", delta(n)) for n in range(READ_COUNT)]
    later: Entry = (EVENTS, f"{10 + READ_COUNT}-0", summary())
    given = session.received([*full, later], T0)
    assert given == [delta(n) for n in range(READ_COUNT)] and session.summary is None
    assert reading(session, T0).cursors == {TOKENS: f"{9 + READ_COUNT}-0", CHUNKS: "0-0", EVENTS: "0-0"}
    assert session.received([later], T0) == [summary()]
    assert session.next_step(T0) == Done(summary())


def test_the_summary_is_the_last_message_given_even_with_entries_after_it_in_the_reply():
    session = reader()
    reading(session, T0)
    given = session.received([(TOKENS, "5-0", delta(1)), (EVENTS, "6-0", summary()), (TOKENS, "7-0", delta(2)),
                              (CHUNKS, "6-0", delta(3))], T0)
    assert given == [delta(1), delta(3), summary()]  # the chunk at 6-0 was published before the Summary at 6-0
    assert session.summary == summary() and session.next_step(T0 + S) == Done(summary())


def test_a_lapsed_lease_drains_what_is_there_then_abandons_the_session_as_failed():
    session = reader()
    assert isinstance(session.next_step(T0), CheckLease)
    session.lease_observed(True, T0)
    assert isinstance(session.next_step(T0 + 1), Read)
    session.received([], T0 + 1)
    now = T0 + CHECK_EVERY
    assert isinstance(session.next_step(now), CheckLease)
    session.lease_observed(False, now)
    drain = session.next_step(now)
    assert isinstance(drain, Read) and drain.block_ms is None  # what is already there, without waiting
    assert session.received([(EVENTS, "9-0", delta(1))], now) == [delta(1)]
    assert session.next_step(now) == Read({TOKENS: "0-0", CHUNKS: "0-0", EVENTS: "9-0"}, READ_COUNT, None)
    assert session.received([], now) == []
    abandon = session.next_step(now)
    assert isinstance(abandon, Abandon) and abandon.publish
    assert abandon.summary.status is SessionStatus.FAILED and "stopped renewing its lease" in str(abandon.summary.detail)
    assert (abandon.summary.turn, abandon.summary.submitted_ns, abandon.summary.finished_ns) == (2, T0, now)
    standing = summary("won the race")  # the executor ended it first: its end stands
    assert session.ended(standing) == [standing] and session.next_step(now) == Done(standing)


def test_a_lapsed_lease_whose_summary_is_already_in_the_stream_ends_with_that_summary():
    session = reader()
    session.next_step(T0)
    session.lease_observed(True, T0)
    session.next_step(T0)
    session.received([], T0)
    session.next_step(T0 + CHECK_EVERY)
    session.lease_observed(False, T0 + CHECK_EVERY)
    assert session.next_step(T0 + CHECK_EVERY).block_ms is None  # type: ignore[union-attr]
    assert session.received([(EVENTS, "9-0", summary())], T0 + CHECK_EVERY) == [summary()]
    assert session.next_step(T0 + CHECK_EVERY) == Done(summary())


def test_a_queued_lone_session_is_never_lost_for_want_of_an_executor():
    session = reader()
    for now in range(T0, DEADLINE - S, CHECK_EVERY):
        step = session.next_step(now)
        if isinstance(step, CheckLease):
            session.lease_observed(False, now)
            step = session.next_step(now)
        assert isinstance(step, Read) and step.block_ms is not None
        session.received([], now)


def test_a_turn_no_executor_takes_within_its_grace_is_abandoned_as_failed():
    session = reader(executor_grace_s=3 * SETTINGS.lease_s)
    session.next_step(T0)
    session.lease_observed(False, T0)
    session.next_step(T0)
    session.received([], T0)
    late = T0 + int(3 * SETTINGS.lease_s * S) + 1
    assert "no executor took this turn within 9.0 s" in str(abandoned_as_lost(session, late).detail)


def test_a_read_never_blocks_past_the_deadline():
    session = reader()
    almost = DEADLINE - 40_000_000  # 40 ms left
    assert reading(session, almost).block_ms == 40
    assert reading(session, DEADLINE - 10).block_ms == 1  # less than a millisecond: the shortest block


def test_at_the_deadline_one_last_read_is_made_then_the_session_is_abandoned_as_timed_out():
    session = reader()
    reading(session, T0)
    session.received([], T0)
    final = session.next_step(DEADLINE)
    assert isinstance(final, Read) and final.block_ms is None
    assert session.received([(TOKENS, "5-0", delta(1))], DEADLINE) == [delta(1)]
    abandon = session.next_step(DEADLINE)
    assert isinstance(abandon, Abandon) and abandon.publish and abandon.summary.status is SessionStatus.TIMEOUT


def test_a_summary_in_the_last_read_at_the_deadline_stands():
    session = reader()
    session.next_step(DEADLINE)
    assert session.received([(EVENTS, "5-0", summary())], DEADLINE) == [summary()]
    assert session.next_step(DEADLINE) == Done(summary())


def test_a_failed_last_read_at_the_deadline_abandons_at_once():
    session = reader()
    session.next_step(DEADLINE)
    assert session.failed("ConnectionError: gone", DEADLINE) == []
    abandon = session.next_step(DEADLINE)
    assert isinstance(abandon, Abandon) and abandon.summary.status is SessionStatus.TIMEOUT


def test_redis_failures_pause_then_retry_and_a_success_resets_the_give_up_clock():
    session = reader()
    reading(session, T0)
    assert session.failed("ConnectionError: refused", T0) == []
    assert session.next_step(T0) == Pause(REDIS_RETRY_S)
    give_up = int(REDIS_GIVE_UP_LEASES * SETTINGS.lease_s * S)
    reading(session, T0 + give_up)  # the lease check answered: Redis is back
    session.received([], T0 + give_up)
    session.failed("ConnectionError: refused", T0 + give_up)  # away again: the clock starts from the last answer
    assert session.next_step(T0 + give_up) == Pause(REDIS_RETRY_S)
    assert isinstance(session.next_step(T0 + 2 * give_up), (Read, CheckLease))  # not yet more than three leases
    abandon = session.next_step(T0 + 2 * give_up + 1)
    assert isinstance(abandon, Abandon) and not abandon.publish


def test_after_redis_comes_back_a_missing_lease_gets_time_to_be_renewed_then_the_outage_is_named():
    """A Redis restarted without persistence comes back without the executor's lease: a living executor renews it
    within a lease period, so only its staying missing for three periods counts, and the detail says why."""
    session = reader()
    reading(session, T0)
    session.failed("ConnectionError: Connection closed by server.", T0 + 1)
    assert session.next_step(T0 + 1) == Pause(REDIS_RETRY_S)
    back = T0 + S
    assert isinstance(session.next_step(back), CheckLease)
    session.lease_observed(False, back)  # back, but the lease went with Redis's data
    late = back + int(3 * SETTINGS.lease_s * S)  # three lease periods after Redis answered again
    excused = late - CHECK_EVERY
    assert isinstance(session.next_step(back), Read)
    session.received([], back)
    assert isinstance(session.next_step(excused), CheckLease)
    session.lease_observed(False, excused)
    assert isinstance(session.next_step(excused), Read) and session.next_step(excused).block_ms is not None
    session.received([], excused)
    detail = abandoned_as_lost(session, late).detail
    assert str(detail).startswith("Redis was unreachable (ConnectionError: Connection closed by server.), and the "
                                  "executor's lease did not come back within 9.0 s")


def test_a_redis_back_without_the_session_s_streams_gives_the_executor_time_and_is_named():
    """Redis restarted without persistence, and its clients reconnected without an error: the events stream this
    reader has read from is gone with the lease, so a missing lease is an outage's, not yet a dead executor's."""
    session = reader()
    first = session.next_step(T0)
    assert first == CheckLease(LEASE, None)  # nothing read yet: no stream to witness with
    session.lease_observed(True, T0)
    session.next_step(T0)
    session.received([(EVENTS, "5-0", delta(1))], T0)
    now = T0 + CHECK_EVERY
    assert session.next_step(now) == CheckLease(LEASE, EVENTS)
    session.lease_observed(False, now, witness_kept=False)
    assert session.next_step(now).block_ms is not None  # type: ignore[union-attr]
    session.received([], now)
    late = now + int(3 * SETTINGS.lease_s * S)
    detail = abandoned_as_lost(session, late).detail
    assert str(detail).startswith("Redis came back without this session's streams (restarted without persistence)")


def test_a_lease_missing_with_the_streams_still_there_is_a_dead_executor_s_at_once():
    session = reader()
    reading(session, T0)
    session.received([(EVENTS, "5-0", delta(1))], T0)
    now = T0 + CHECK_EVERY
    assert session.next_step(now) == CheckLease(LEASE, EVENTS)
    session.lease_observed(False, now, witness_kept=True)
    assert session.next_step(now).block_ms is None  # type: ignore[union-attr]


def test_after_redis_comes_back_a_renewed_lease_keeps_the_session_going():
    session = reader()
    reading(session, T0)
    session.failed("ConnectionError: refused", T0 + 1)
    session.next_step(T0 + 1)
    for now in (T0 + S, T0 + 20 * S):  # missing at first, renewed later: never lost, and later lapses count again
        assert isinstance(session.next_step(now), CheckLease)
        session.lease_observed(now == T0 + 20 * S, now)
        assert session.next_step(now).block_ms is not None
        session.received([], now)
    gone = T0 + 21 * S
    assert isinstance(session.next_step(gone), CheckLease)
    session.lease_observed(False, gone)
    assert session.next_step(gone).block_ms is None


def test_redis_unreachable_for_three_leases_ends_the_session_here_without_publishing():
    session = reader()
    reading(session, T0)
    now = T0
    while not isinstance(step := session.next_step(now), Abandon):
        assert isinstance(step, (Pause, Read, CheckLease)) and now <= T0 + int(REDIS_GIVE_UP_LEASES * 3.0 * S) + S
        if not isinstance(step, Pause):
            session.failed("ConnectionError: refused", now)
        now += int(REDIS_RETRY_S * S)
    assert not step.publish and step.summary.status is SessionStatus.FAILED
    assert "Redis unreachable for 9.0 s (ConnectionError: refused)" in str(step.summary.detail)
    assert session.ended(step.summary) == [step.summary] and isinstance(session.next_step(now), Done)


def test_an_abandon_that_cannot_be_published_ends_with_the_reader_s_own_summary():
    session = reader()
    session.next_step(DEADLINE)
    session.received([], DEADLINE)
    abandon = session.next_step(DEADLINE)
    assert isinstance(abandon, Abandon)
    own: list[Message] = session.failed("ConnectionError: refused", DEADLINE)
    assert own == [abandon.summary] and session.next_step(DEADLINE) == Done(abandon.summary)


@pytest.mark.parametrize("lease_s", [0.3, 3.0])
def test_the_lease_is_checked_once_per_third_of_a_lease_period(lease_s: float):
    request = SessionRequest(session_id="s", model="m", submitted_ns=T0, prompt="x")
    session = SessionReader(request, KEYS, Settings(namespace="test-reading", lease_s=lease_s), tokens=True, now_ns=T0)
    every, millisecond = lease_s / 3 * S, 1_000_000
    checks = []
    for now in range(T0, T0 + int(10 * every), millisecond):
        step = session.next_step(now)
        if isinstance(step, CheckLease):
            checks.append(now)
            session.lease_observed(True, now)
        else:
            session.received([], now)
    assert len(checks) == 10 and all(every <= b - a <= every + millisecond for a, b in zip(checks, checks[1:]))
