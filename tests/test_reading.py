"""How the client merges one XREAD reply over a session's streams: in publication order, never past a full stream."""

from __future__ import annotations

from eager.common.protocol import Delta, FinishReason, Gate, GenerationEnd, SessionStatus, Summary, encode
from eager.client import in_publication_order

STREAMS = ["tokens", "chunks", "events"]
SUMMARY = Summary(SessionStatus.OK, Gate.EAGER, 1, 2, "")


def reply(**streams: list[tuple[str, object]]) -> list:
    """An XREAD reply as redis-py returns it: grouped by stream, in the order the streams were asked for."""
    return [[key, [(entry_id, encode(message)) for entry_id, message in entries]] for key, entries in streams.items()]


def test_entries_are_merged_by_publication_time_with_cause_before_effect_in_a_tie():
    merged = in_publication_order(reply(
        events=[("100-0", SUMMARY)],  # Redis lists the events stream first here
        tokens=[("98-0", Delta("a", 1)), ("100-0", Delta("b", 2)), ("100-1", GenerationEnd(FinishReason.STOP, 3, 2))],
    ), STREAMS, count=512)
    assert [(key, entry_id) for key, entry_id, _ in merged] == [
        ("tokens", "98-0"), ("tokens", "100-0"), ("tokens", "100-1"), ("events", "100-0")]


def test_nothing_later_than_a_full_stream_s_last_entry_is_returned_yet():
    merged = in_publication_order(reply(
        tokens=[("10-0", Delta("a", 1)), ("11-0", Delta("b", 2))],  # full at count=2: "12-0" may follow unread
        events=[("12-5", SUMMARY)],
    ), STREAMS, count=2)
    assert [entry_id for _, entry_id, _ in merged] == ["10-0", "11-0"]


def test_an_empty_reply_is_empty():
    assert in_publication_order(None, STREAMS, count=2) == []
